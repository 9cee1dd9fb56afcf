"""`python -m lambdas.mirror plan|sync` against loopback registries: output, --json, exit codes."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from lambdas.mirror.cli.main import main
from lambdas.mirror.cli.report import _Display
from lambdas.mirror.oci.registry import RegistryClient
from lambdas.mirror.planning.task import Task
from tests.support.images import push_image
from tests.support.registry import RegistryServer

from .support import write_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hub(registry_factory: Callable[..., RegistryServer]) -> RegistryServer:
    """Plays Docker Hub: `python` in the config resolves to library/python here."""
    server = registry_factory("hub")
    push_image(server.host, "library/python", "3.13-slim", attestations=True, seed=1)
    push_image(server.host, "library/python", "3.12-slim", kind="docker-list", seed=2)
    return server


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_plan_prints_each_tag_with_digests_action_and_cost_using_heads_only(
        tmp_path: Path, hub: RegistryServer, registry_factory: Callable[..., RegistryServer]) -> None:
    destination = registry_factory("destination")
    cfg = write_config(tmp_path / "mirror.yaml", {"source": "python", "tags": ["3.13-slim", "3.12-slim"],
                                                  "platforms": ["linux/amd64"]})

    code, out, _ = run("plan", "--config", str(cfg), "--registry", destination.host,
                       "--upstream", f"docker.io={hub.host}")

    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["SOURCE", "REPOSITORY", "SOURCE", "DIGEST", "DEST", "DIGEST", "ACTION", "REFERRERS",
                                "COST", "NOTE"]
    # The index is filtered, so only its platform manifest's referrers are listed (the copy does that): one GET more
    assert lines[1].split() == ["docker.io/library/python:3.13-slim", "mirror/docker.io/library/python",
                                hub_digest(hub, "3.13-slim")[7:19], "-", "copy", "?", "4"]
    assert lines[-1] == "2 to copy (8 manifest GETs, 2 of them for referrers), 0 up to date, 0 deferred, 0 failed"
    assert hub.manifest_gets() == []


def hub_digest(hub: RegistryServer, tag: str) -> str:
    info = RegistryClient(hub.host).head_manifest("library/python", tag)
    assert info is not None
    return info.digest


def test_sync_json_summary_then_an_unchanged_resync_skips_everything(
        tmp_path: Path, hub: RegistryServer, registry_factory: Callable[..., RegistryServer]) -> None:
    destination = registry_factory("destination")
    cfg = write_config(tmp_path / "mirror.yaml", {"source": "python", "tag_regex": r"3\.1[23]-slim"})
    argv = ("sync", "--config", str(cfg), "--registry", destination.host, "--upstream", f"docker.io={hub.host}",
            "--json")

    code, out, _ = run(*argv)
    first = json.loads(out)
    gets = len(hub.manifest_gets())
    code_again, out_again, _ = run(*argv)
    again = json.loads(out_again)

    assert (code, first["copied"], first["failed"]) == (0, 2, 0)
    assert first["bytes"] > 0 and {i["repository"] for i in first["items"]} == {"mirror/docker.io/library/python"}
    assert (code_again, again["copied"], again["skipped"]) == (0, 0, 2)
    assert len(hub.manifest_gets()) == gets


def test_sync_exits_non_zero_when_an_image_fails_and_still_copies_the_rest(
        tmp_path: Path, hub: RegistryServer, registry_factory: Callable[..., RegistryServer]) -> None:
    destination = registry_factory("destination")
    cfg = write_config(tmp_path / "mirror.yaml", {"source": "python", "tags": ["3.13-slim", "no-such-tag"]})

    code, out, _ = run("sync", "--config", str(cfg), "--registry", destination.host,
                       "--upstream", f"docker.io={hub.host}")

    assert code == 1
    assert "failed docker.io/library/python:no-such-tag: tag not found at the source" in out
    assert "copied docker.io/library/python:3.13-slim sha256:" in out


def test_sync_on_a_terminal_shows_progress_in_place(
        tmp_path: Path, hub: RegistryServer, registry_factory: Callable[..., RegistryServer]) -> None:
    destination = registry_factory("destination")
    cfg = write_config(tmp_path / "mirror.yaml", {"source": "python", "tags": ["3.13-slim"]})

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    code = main(["sync", "--config", str(cfg), "--registry", destination.host, "--upstream", f"docker.io={hub.host}"],
                out=out, err=io.StringIO())

    assert code == 0 and "\r\033[K" in out.getvalue()


def test_bad_config_is_one_line_naming_file_entry_and_field_with_exit_2(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "mirror.yaml", {"source": "python", "tags": ["1"], "platforms": ["linux/sparc"]})

    code, out, err = run("plan", "--config", str(cfg), "--registry", "127.0.0.1:9")

    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert err.startswith(f"error: {cfg}: images[0] (python).platforms[0]: 'linux/sparc' is not a platform")


def test_module_entry_point_runs_as_python_dash_m(
        tmp_path: Path, hub: RegistryServer, registry_factory: Callable[..., RegistryServer]) -> None:
    destination = registry_factory("destination")
    cfg = write_config(tmp_path / "mirror.yaml", {"source": "python", "tags": ["3.12-slim"]})

    done = subprocess.run([sys.executable, "-m", "lambdas.mirror", "sync", "--config", str(cfg), "--registry",
                           destination.host, "--upstream", f"docker.io={hub.host}", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["copied"] == 1


@pytest.mark.parametrize("registry", ["http://127.0.0.1:5000", "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                                      "127.0.0.1:5000/path"])
def test_a_registry_given_as_a_url_is_a_usage_error_with_exit_2(
        registry: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "mirror.yaml", {"source": "python", "tags": ["1"]})

    with pytest.raises(SystemExit) as exited:
        main(["plan", "--config", str(cfg), "--registry", registry])

    lines = capsys.readouterr().err.splitlines()
    assert exited.value.code == 2
    assert len(lines) == 1 and lines[0].startswith("python -m lambdas.mirror plan: error: argument --registry: ")
    assert "HOST[:PORT]" in lines[0]


@pytest.mark.parametrize(("argv", "says"), [
    (["plan", "--registry", "http://127.0.0.1:5000"],
     "python -m lambdas.mirror plan: error: argument --registry: 'http://127.0.0.1:5000': write '127.0.0.1:5000' "
     "(HOST[:PORT] without http://: loopback hosts are reached over HTTP, others over HTTPS) "
     "(see python -m lambdas.mirror plan --help)"),
    (["sync", "--upstream", "docker.io=http://127.0.0.1:5001"],
     "python -m lambdas.mirror sync: error: argument --upstream: 'docker.io=http://127.0.0.1:5001': write "
     "'docker.io=127.0.0.1:5001' (REGISTRY=HOST[:PORT] without http://: loopback hosts are reached over HTTP, "
     "others over HTTPS) (see python -m lambdas.mirror sync --help)"),
    (["plan", "--workers", "many"],
     "python -m lambdas.mirror plan: error: argument --workers: invalid int value: 'many' "
     "(see python -m lambdas.mirror plan --help)"),
    (["plan", "--nope"],
     "python -m lambdas.mirror: error: unrecognized arguments: --nope (see python -m lambdas.mirror --help)"),
    ([], "python -m lambdas.mirror: error: the following arguments are required: {plan,sync} "
         "(see python -m lambdas.mirror --help)"),
])
def test_every_usage_error_is_one_line_saying_what_to_write(
        argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)

    captured = capsys.readouterr()
    assert exited.value.code == 2
    assert (captured.out, captured.err) == ("", says + "\n")


def test_sync_json_items_share_one_schema_whatever_happened_to_them(
        tmp_path: Path, hub: RegistryServer, registry_factory: Callable[..., RegistryServer]) -> None:
    destination = registry_factory("destination")
    cfg = write_config(tmp_path / "mirror.yaml", {"source": "python", "tags": ["3.13-slim", "3.12-slim", "gone"]})
    argv = ("sync", "--config", str(cfg), "--registry", destination.host, "--upstream", f"docker.io={hub.host}",
            "--json")
    run(*argv[:-1], "--json")
    push_image(hub.host, "library/python", "3.12-slim", kind="docker-list", seed=9)  # one changes upstream

    code, out, _ = run(*argv)

    items = json.loads(out)["items"]
    assert code == 1
    assert sorted((i["tag"], i["status"]) for i in items) == [
        ("3.12-slim", "copied"), ("3.13-slim", "skipped"), ("gone", "failed")]
    assert len({tuple(sorted(i)) for i in items}) == 1


def test_without_a_terminal_each_finished_image_is_a_line_with_bytes_and_rate(
        tmp_path: Path, hub: RegistryServer, registry_factory: Callable[..., RegistryServer]) -> None:
    destination = registry_factory("destination")
    cfg = write_config(tmp_path / "mirror.yaml", {"source": "python", "tags": ["3.13-slim", "3.12-slim"]})

    code, out, _ = run("sync", "--config", str(cfg), "--registry", destination.host,
                       "--upstream", f"docker.io={hub.host}")

    copied = [line for line in out.splitlines() if " copied docker.io/" in line]
    assert code == 0 and "\r" not in out and "\033" not in out
    assert [line.split()[0] for line in copied] == ["[1/2]", "[2/2]"]
    assert all(re.search(r" \d+\.\d KB in \d+\.\ds \(\d+(\.\d)? [KMG]?B/s\)", line) for line in copied), copied


def test_without_a_terminal_progress_is_a_line_at_most_every_interval() -> None:
    out, now = io.StringIO(), [0.0]
    display = _Display(out, 1, interval=5.0, clock=lambda: now[0])
    report = display.progress(Task("python", "3.13", "mirror/python"))

    for second, moved in ((1, 10_000_000), (4, 20_000_000), (6, 30_000_000), (8, 40_000_000), (12, 50_000_000)):
        now[0] = float(second)
        report("sha256:a", moved, 100_000_000)

    assert out.getvalue().splitlines() == [
        "[1/1] docker.io/library/python:3.13  30.0 MB  1 blobs  5.0 MB/s",
        "[1/1] docker.io/library/python:3.13  50.0 MB  1 blobs  4.2 MB/s",
    ]

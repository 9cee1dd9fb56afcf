"""`python -m lambdas.mirror` as its own process, as a user runs it: signals, pipes, the environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lambdas.mirror.oci.registry import RegistryClient
from tests.support.images import push_image, push_large_image
from tests.support.registry import RegistryServer, free_port

from .support import write_config

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "lambdas.mirror"]


def environment(**extra: str) -> dict[str, str]:
    """The caller's environment without AWS settings, plus `extra`."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **extra}


def test_ctrl_c_mid_blob_stops_without_a_traceback_and_commits_nothing(
        tmp_path: Path, registry_factory: Callable[..., RegistryServer]) -> None:
    # Given a copy of one 256 MiB layer under way
    source, destination = registry_factory("source"), registry_factory("destination")
    push_large_image(source.host, "team/big", "v1", size=256 << 20)
    cfg = write_config(tmp_path / "mirror.yaml", {"source": f"{source.host}/team/big", "tags": ["v1"],
                                                  "target": "mirror/big"})
    process = subprocess.Popen([*CLI, "sync", "--config", str(cfg), "--registry", destination.host], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not any(r.method == "POST" for r in destination.requests()) and time.monotonic() < deadline:
        time.sleep(0.02)

    # When the user presses Ctrl-C
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)

    # Then it stops with one line and exit 130, before the blob finished: no blob, no tag, no manifest
    layer = json.loads(RegistryClient(source.host).get_manifest("team/big", "v1")[0])["layers"][0]
    destination_client = RegistryClient(destination.host)
    assert process.returncode == 130, err
    assert err.splitlines() == ["interrupted: the image in progress was abandoned uncommitted (its tags unchanged); "
                                "images reported as copied are complete"]
    assert not destination_client.has_blob("mirror/big", layer["digest"])
    assert destination_client.head_manifest("mirror/big", "v1") is None
    assert not [r for r in destination.requests() if r.method == "PUT" and "/manifests/" in r.path]


def test_json_into_a_pipe_closed_early_ends_quietly(
        tmp_path: Path, registry_factory: Callable[..., RegistryServer]) -> None:
    # Given a plan whose JSON is bigger than a pipe buffer, and a reader that leaves at once (`| head -c 0`)
    source, destination = registry_factory("source"), registry_factory("destination")
    push_image(source.host, "team/app", "v1", kind="docker-v2")
    cfg = write_config(tmp_path / "mirror.yaml", *({"source": f"{source.host}/team/app{n}", "tags": ["v1"]}
                                                   for n in range(150)))
    read, write = os.pipe()
    os.close(read)

    # When the plan is printed into it
    done = subprocess.run([*CLI, "plan", "--config", str(cfg), "--registry", destination.host, "--json"], cwd=ROOT,
                          stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(write)

    # Then it ends without a word on stderr
    assert done.stderr == ""
    assert done.returncode == 1


def test_plan_runs_without_powertools_installed(
        tmp_path: Path, registry_factory: Callable[..., RegistryServer]) -> None:
    # Given a Python where aws_lambda_powertools cannot be imported (what `make synth` alone installs)
    source, destination = registry_factory("source"), registry_factory("destination")
    push_image(source.host, "team/app", "v1", kind="docker-v2")
    cfg = write_config(tmp_path / "mirror.yaml", {"source": f"{source.host}/team/app", "tags": ["v1"]})
    blocked = ("import sys, runpy; sys.modules['aws_lambda_powertools'] = None; sys.modules['aws_xray_sdk'] = None; "
               "sys.argv[0] = 'lambdas.mirror'; runpy.run_module('lambdas.mirror', run_name='__main__')")

    # When `plan` and `sync` run as the manual shows
    plan = subprocess.run([sys.executable, "-c", blocked, "plan", "--config", str(cfg), "--registry",
                           destination.host], cwd=ROOT, capture_output=True, text=True, timeout=60)
    sync = subprocess.run([sys.executable, "-c", blocked, "sync", "--config", str(cfg), "--registry",
                           destination.host], cwd=ROOT, capture_output=True, text=True, timeout=60)

    # Then both work
    assert (plan.returncode, plan.stderr) == (0, "")
    assert plan.stdout.splitlines()[-1] == ("1 to copy (2 manifest GETs, 1 of them for referrers), 0 up to date, "
                                            "0 deferred, 0 failed")
    assert (sync.returncode, sync.stderr) == (0, "")


def test_without_a_region_the_cli_says_what_to_set_in_one_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "mirror.yaml", {"source": "python", "tags": ["1"]})

    done = subprocess.run([*CLI, "plan", "--config", str(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=environment(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                                          AWS_CONFIG_FILE=str(tmp_path / "none"),
                                          AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none")))

    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: no AWS region for your account's ECR: set AWS_REGION (e.g. AWS_REGION=eu-west-1), or give "
        "--registry HOST[:PORT] to mirror into another registry"]


def test_the_cli_takes_the_region_from_aws_region(tmp_path: Path) -> None:
    # Given AWS_REGION only (as the CDK CLI and `make deploy` use it), and an ECR endpoint that is down
    cfg = write_config(tmp_path / "mirror.yaml", {"source": "python", "tags": ["1"]})

    done = subprocess.run([*CLI, "plan", "--config", str(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=environment(AWS_REGION="eu-west-1", AWS_ACCESS_KEY_ID="testing",
                                          AWS_SECRET_ACCESS_KEY="testing", AWS_MAX_ATTEMPTS="1",
                                          AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
                                          AWS_CONFIG_FILE=str(tmp_path / "none")))

    # Then the region was found, and the one line is about reaching ECR
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: cannot reach your account's ECR: EndpointConnectionError: ")
    assert line.endswith("(or give --registry HOST[:PORT] to mirror into another registry)")

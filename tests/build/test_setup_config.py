"""The build host's setup without a daemon or a network: the mirror map and its routes, the files it writes
(buildkitd.toml, daemon.json), dockerd's flags, and its command line's one-line errors."""

from __future__ import annotations

import json
import socket
import tomllib
from pathlib import Path

import pytest

from ecr_mirror_cdk.setup.base import SetupError
from ecr_mirror_cdk.setup.buildkit import buildkit_config
from ecr_mirror_cdk.setup.cli import arguments, main
from ecr_mirror_cdk.setup.daemon import daemon_config, daemon_hosts, local_api, parse_flags
from ecr_mirror_cdk.setup.endpoint import listen
from ecr_mirror_cdk.setup.mirror_map import MirrorMap

MAP = MirrorMap({"docker.io": "docker-hub", "quay.io": "quay"},
                {"docker.io/moby/buildkit": "mirror/docker.io/moby/buildkit", "localhost:5000/team/app": "mirror/x"})


def test_docker_hub_names_route_to_the_direct_copy_first_then_the_cache_prefix():
    assert MAP.route("moby/buildkit") == ("docker.io", "moby/buildkit",
                                          ["mirror/docker.io/moby/buildkit", "docker-hub/moby/buildkit"])
    assert MAP.route("library/python") == ("docker.io", "library/python", ["docker-hub/library/python"])
    assert MAP.route("python") == ("docker.io", "library/python", ["docker-hub/library/python"])


def test_other_upstreams_are_named_by_host_and_unknown_ones_get_nothing():
    assert MAP.route("quay.io/org/app") == ("quay.io", "org/app", ["quay/org/app"])
    assert MAP.route("ghcr.io/org/app") == ("ghcr.io", "org/app", [])


@pytest.mark.parametrize("text, message", [
    ("[]", "must be a JSON object"),
    ('{"prefixes": {"docker.io": "Docker Hub"}}', "prefixes: 'docker.io'"),
    ('{"prefixes": {}, "repositories": {"python": "x"}}', "repositories: 'python'"),
    ('{"prefixes": {}, "extra": 1}', "must be a JSON object"),
])
def test_a_malformed_map_is_one_line_naming_the_entry(text, message):
    with pytest.raises(SetupError, match=message):
        MirrorMap.parse(text)


def test_the_stacks_map_with_tags_is_read_as_the_stack_writes_it():
    text = json.dumps({"prefixes": {"docker.io": "docker-hub"},
                       "repositories": {"gcr.io/distroless/base": {"repository": "mirror/gcr.io/distroless/base",
                                                                   "tags": ["nonroot"]}}})
    assert MirrorMap.parse(text).repositories == {"gcr.io/distroless/base": "mirror/gcr.io/distroless/base"}


def test_the_stacks_compact_map_routes_listed_images_to_their_copy_under_the_mirror_prefix_first():
    """ecr_mirror_cdk/contract.py mirror_map: images at mirror/<host>/<path> are named by host, not one by one."""
    mirror = MirrorMap.parse(json.dumps({"prefixes": {"docker.io": "docker-hub"}, "mirror_prefix": "mirror",
                                         "mirror_hosts": ["docker.io", "gcr.io"],
                                         "repositories": {"mcr.microsoft.com/dotnet/runtime": "mirror/dotnet"}}))
    assert mirror.route("python") == ("docker.io", "library/python",
                                      ["mirror/docker.io/library/python", "docker-hub/library/python"])
    assert mirror.route("gcr.io/distroless/base")[2] == ["mirror/gcr.io/distroless/base"]
    assert mirror.route("mcr.microsoft.com/dotnet/runtime")[2] == ["mirror/dotnet"]
    registries = tomllib.loads(buildkit_config(mirror, None, "ecr.example"))["registry"]
    assert registries["docker.io"]["mirrors"] == ["ecr.example/mirror/docker.io", "ecr.example/docker-hub"]
    assert registries["gcr.io"]["mirrors"] == ["ecr.example/mirror/gcr.io"]
    assert "mcr.microsoft.com" not in registries  # one image elsewhere: no path names it


def test_buildkit_pulls_each_upstream_through_the_endpoint_then_ecrs_prefix():
    config = tomllib.loads(buildkit_config(MAP, "127.0.0.1:5301", "123456789012.dkr.ecr.eu-west-1.amazonaws.com"))
    registries = config["registry"]
    assert registries["docker.io"]["mirrors"] == [
        "127.0.0.1:5301", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/docker-hub"]
    assert registries["quay.io"]["mirrors"] == [
        "127.0.0.1:5301/quay.io", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/quay"]
    assert registries["127.0.0.1:5301"] == {"http": True}
    assert "localhost:5000" not in registries  # a path mirror cannot carry a port
    assert "123456789012.dkr.ecr.eu-west-1.amazonaws.com" not in registries  # HTTPS, the default


def test_the_daemon_config_keeps_its_keys_and_puts_the_endpoint_first(tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"debug": True, "registry-mirrors": ["https://mirror.gcr.io",
                                                                    "http://127.0.0.1:4000"]}))
    old, new = daemon_config(path, "http://127.0.0.1:5301")
    assert old == path.read_text()
    assert json.loads(new) == {"debug": True, "registry-mirrors": ["http://127.0.0.1:5301", "https://mirror.gcr.io"]}


def test_a_daemon_config_that_is_not_json_is_refused(tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text("{debug: true")
    with pytest.raises(SetupError, match="daemon.json: not valid JSON"):
        daemon_config(path, "http://127.0.0.1:5301")


@pytest.mark.parametrize("registry", ["http://127.0.0.1:5000", "host/path", "bad host"])
def test_registry_must_be_host_and_port(registry, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--registry", registry])
    assert exit_.value.code == 2
    assert "--registry takes HOST[:PORT]" in capsys.readouterr().err


def test_the_registry_defaults_to_the_projects_mirror_registry_variable(monkeypatch):
    monkeypatch.setenv("MIRROR_REGISTRY", "111122223333.dkr.ecr.eu-west-1.amazonaws.com")
    assert arguments([]).registry == "111122223333.dkr.ecr.eu-west-1.amazonaws.com"
    assert arguments(["--registry", "127.0.0.1:5000"]).registry == "127.0.0.1:5000"


def test_without_a_registry_the_setup_says_so_in_one_line(monkeypatch, capsys):
    monkeypatch.delenv("MIRROR_REGISTRY", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "setup_mirror: --registry (or $MIRROR_REGISTRY) is required\n"


def test_the_report_needs_no_registry(monkeypatch):
    monkeypatch.setenv("MIRROR_REGISTRY", "not a host")
    assert arguments(["--report"]).report


def test_the_home_registry_comes_from_its_variable_and_must_be_a_host(monkeypatch, capsys):
    monkeypatch.setenv("MIRROR_HOME_REGISTRY", "111122223333.dkr.ecr.us-east-1.amazonaws.com")
    args = arguments(["--registry", "111122223333.dkr.ecr.eu-west-1.amazonaws.com"])
    assert args.home_registry == "111122223333.dkr.ecr.us-east-1.amazonaws.com"
    with pytest.raises(SystemExit):
        arguments(["--registry", "127.0.0.1:5000", "--home-registry", "https://home"])
    assert capsys.readouterr().err == "setup_mirror: --home-registry takes HOST[:PORT], got 'https://home'\n"


@pytest.mark.parametrize("value", ["70000", "-1", "http"])
def test_a_port_out_of_range_is_one_line(value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--registry", "127.0.0.1:5000", "--port", value])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (f"setup_mirror: argument --port: {value!r} is not a TCP port "
                                       "(0 to 65535, 0 for any free one)\n")


def test_a_taken_port_is_one_line_naming_it():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(SetupError, match=rf"^--port {port}: cannot listen on 127.0.0.1:{port} \(Address already"):
            listen(port)


def test_the_daemons_socket_is_found_among_all_its_hosts():
    flags = parse_flags(["--host=tcp://127.0.0.1:2375", "-Hunix:///custom.sock", "-H", "unix:///second.sock"])
    hosts = daemon_hosts(flags, Path("/nonexistent/daemon.json"))
    assert hosts == ["tcp://127.0.0.1:2375", "unix:///custom.sock", "unix:///second.sock"]
    assert local_api(hosts, tls=False) == "unix:///custom.sock"
    assert local_api(["tcp://127.0.0.1:2375"], tls=False) == "tcp://127.0.0.1:2375"
    assert daemon_hosts([], Path("/nonexistent/daemon.json")) == ["unix:///var/run/docker.sock"]


def test_a_daemon_the_setup_cannot_ask_is_refused_in_one_line():
    with pytest.raises(SetupError, match="tcp://127.0.0.1:2376: the setup needs"):
        local_api(["tcp://127.0.0.1:2376"], tls=True)


def test_a_map_nested_too_deeply_is_one_line(capsys, tmp_path):
    deep = "[" * 20_000 + "]" * 20_000
    assert main(["--registry", "127.0.0.1:1", "--map", deep, "--endpoint-pidfile", str(tmp_path / "ep.pid")]) == 0
    assert capsys.readouterr().out.startswith("mirror: not set up: --map is not JSON: nested too deeply; ")


NOT_A_MAP = ('--map must be a JSON object with "prefixes", and optionally "repositories", "mirror_prefix" and '
             '"mirror_hosts"')


@pytest.mark.parametrize("strict", [["--strict"], []])
def test_strict_or_mirror_strict_true_makes_a_host_that_cannot_be_set_up_a_failure(strict, capsys, monkeypatch,
                                                                                    tmp_path):
    monkeypatch.setenv("MIRROR_STRICT", "false" if strict else "true")
    args = ["--registry", "127.0.0.1:1", "--map", "[]", "--endpoint-pidfile", str(tmp_path / "ep.pid"), *strict]
    assert main(args) == 1
    assert capsys.readouterr() == ("", f"setup_mirror: {NOT_A_MAP}\n")
    assert not list(tmp_path.iterdir())  # no record: the build stops here


def test_a_host_that_cannot_be_set_up_is_recorded_for_the_closing_report(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("MIRROR_STRICT", raising=False)
    assert main(["--registry", "127.0.0.1:1", "--map", "[]", "--endpoint-pidfile", str(tmp_path / "ep.pid")]) == 0
    line = capsys.readouterr().out
    assert line == (f"mirror: not set up: {NOT_A_MAP}; this build pulls from the upstream registries as it would "
                    "without the mirror\n")
    assert main(["--report", "--endpoint-pidfile", str(tmp_path / "ep.pid")]) == 0
    assert capsys.readouterr().out == line


def test_a_mirrored_registry_with_a_port_is_asked_under_the_name_the_mirror_gives_it() -> None:
    # Given the stack's map for an image of registry.example.com:5000 at its default location
    from ecr_mirror_cdk.config_parse import parse_config
    from ecr_mirror_cdk.contract import mirror_map
    config = parse_config({"images": [{"source": "registry.example.com:5000/team/app", "tags": ["1"]}]})
    mirror = MirrorMap.parse(mirror_map(config))

    # When a build asks for it
    _, _, candidates = mirror.route("registry.example.com:5000/team/app")

    # Then the endpoint asks for the repository the copier fills
    assert candidates == [config.images[0].repository] == ["mirror/registry.example.com-5000/team/app"]


def test_a_home_registry_equal_to_the_registry_is_the_home_region_and_is_ignored() -> None:
    # The contract names the home registry in every region; in the home region it is the registry itself.
    args = arguments(["--registry", "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                      "--home-registry", "123456789012.dkr.ecr.us-east-1.amazonaws.com"])

    assert args.home_registry is None

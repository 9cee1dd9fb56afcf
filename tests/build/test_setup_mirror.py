"""setup_mirror.py's parts without a Docker daemon: routing, the config files it writes, the endpoint against
real loopback registries (plain, and behind htpasswd with the password from `aws ecr get-login-password`
against moto), and the report. The daemon side is in test_end_to_end.py."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import sys
import threading
import tomllib
import warnings
from pathlib import Path

import pytest

from codebuild.setup_mirror import (
    Journal,
    MirrorMap,
    Registry,
    SetupError,
    arguments,
    buildkit_config,
    daemon_config,
    handler,
    main,
    report,
    state_files,
)
from tests.support.busybox import push_busybox
from tests.support.moto import fake_aws_environment, moto_client, moto_server

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


def test_buildkit_pulls_each_upstream_through_the_endpoint_then_ecrs_prefix():
    config = tomllib.loads(buildkit_config(MAP, "127.0.0.1:5301", ["123456789012.dkr.ecr.eu-west-1.amazonaws.com"]))
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


# --- the endpoint against real registries -------------------------------------------------------------


class Endpoint:
    def __init__(self, registry: Registry, mirror: MirrorMap, journal: Path, home: Registry | None = None) -> None:
        import http.server

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      handler(registry, mirror, Journal(journal), home))
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def get(self, path: str, accept: str = "application/vnd.docker.distribution.manifest.v2+json"):
        connection = http.client.HTTPConnection(self.host, timeout=10)
        connection.request("GET", path, headers={"Accept": accept})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def endpoint_for(tmp_path):
    started = []

    def start(registry_host: str, mirror: MirrorMap = MAP) -> Endpoint:
        endpoint = Endpoint(Registry(registry_host), mirror, tmp_path / "ep.requests")
        started.append(endpoint)
        return endpoint

    yield start
    for endpoint in started:
        endpoint.stop()


def test_the_endpoint_serves_docker_hub_paths_from_the_cache_prefix(registry, endpoint_for, tmp_path):
    digest = push_busybox(registry.host, "docker-hub/library/busybox", "latest", marker="m")
    endpoint = endpoint_for(registry.host)
    status, headers, body = endpoint.get("/v2/library/busybox/manifests/latest")
    assert status == 200 and headers["Docker-Content-Digest"] == digest
    layer = json.loads(body)["layers"][0]["digest"]
    status, _, blob = endpoint.get(f"/v2/library/busybox/blobs/{layer}")
    assert status == 200 and len(blob) == json.loads(body)["layers"][0]["size"]
    assert registry.manifest_gets("docker-hub/library/busybox")


def test_blob_redirects_are_passed_to_the_client_not_followed(registry_factory, endpoint_for, tmp_path):
    ecr = registry_factory("ecr", redirect_to="http://127.0.0.1:9/")
    push_busybox(ecr.host, "docker-hub/library/busybox", "latest", marker="m")
    endpoint = endpoint_for(ecr.host)
    _, _, body = endpoint.get("/v2/library/busybox/manifests/latest")
    layer = json.loads(body)["layers"][0]["digest"]
    status, headers, _ = endpoint.get(f"/v2/library/busybox/blobs/{layer}")
    assert status == 307 and headers["Location"].startswith("http://127.0.0.1:9/docker/registry/v2/blobs/")


def test_a_miss_is_answered_with_the_mirrors_error_and_journaled_for_the_report(registry, endpoint_for, tmp_path):
    push_busybox(registry.host, "docker-hub/library/busybox", "latest", marker="m")
    endpoint = endpoint_for(registry.host)
    endpoint.get("/v2/library/busybox/manifests/latest")
    status, _, body = endpoint.get("/v2/library/nope/manifests/1")
    assert status == 404 and b"docker-hub/library/nope: 404 MANIFEST_UNKNOWN" in body
    pidfile = tmp_path / "ep.pid"
    assert state_files(pidfile)["journal"] == tmp_path / "ep.requests"
    line = report(pidfile)
    assert line.startswith("mirror: 1 manifests served by the mirror (docker.io 1); 1 fell back to the upstream: "
                           "docker.io/library/nope:1 (docker-hub/library/nope: 404 MANIFEST_UNKNOWN")
    assert "\n" not in line


def test_in_a_replica_region_what_replication_has_not_brought_comes_from_the_home_registry(
        registry_factory, tmp_path):
    # Given a replica holding busybox, and the home registry holding an alpine the replica has not got yet
    replica, home = registry_factory("replica"), registry_factory("home")
    replicated = push_busybox(replica.host, "docker-hub/library/busybox", "latest", marker="replica")
    fresh = push_busybox(home.host, "docker-hub/library/alpine", "3", marker="home")
    endpoint = Endpoint(Registry(replica.host), MAP, tmp_path / "ep.requests", home=Registry(home.host))
    try:
        # When a build pulls both through the endpoint
        _, first, _ = endpoint.get("/v2/library/busybox/manifests/latest")
        status, second, body = endpoint.get("/v2/library/alpine/manifests/3")
        layer = json.loads(body)["layers"][0]
        blob_status, _, blob = endpoint.get(f"/v2/library/alpine/blobs/{layer['digest']}")
        missing, _, reason = endpoint.get("/v2/library/nope/manifests/1")
    finally:
        endpoint.stop()

    # Then the replica serves what it has, the home registry the rest, and the upstream only what neither has
    assert first["Docker-Content-Digest"] == replicated and not home.manifest_gets("docker-hub/library/busybox")
    assert (status, second["Docker-Content-Digest"]) == (200, fresh)
    assert (blob_status, len(blob)) == (200, layer["size"])
    assert missing == 404
    assert f"{replica.host}/docker-hub/library/nope: 404".encode() in reason
    assert f"{home.host}/docker-hub/library/nope: 404".encode() in reason
    assert report(tmp_path / "ep.pid").startswith(
        "mirror: 2 manifests served by the mirror (docker.io 2; 1 from the home registry); 1 fell back")


def test_the_home_registry_comes_from_its_variable_and_must_be_a_host(monkeypatch, capsys):
    monkeypatch.setenv("MIRROR_HOME_REGISTRY", "111122223333.dkr.ecr.us-east-1.amazonaws.com")
    args = arguments(["--registry", "111122223333.dkr.ecr.eu-west-1.amazonaws.com"])
    assert args.home_registry == "111122223333.dkr.ecr.us-east-1.amazonaws.com"
    with pytest.raises(SystemExit):
        arguments(["--registry", "127.0.0.1:5000", "--home-registry", "https://home"])
    assert capsys.readouterr().err == "setup_mirror: --home-registry takes HOST[:PORT], got 'https://home'\n"


def test_a_registry_that_asks_for_a_login_gets_the_ecr_password_from_the_aws_cli(registry_factory, endpoint_for,
                                                                                   tmp_path, monkeypatch):
    """ECR answers 401 with a Basic challenge; the password is `aws ecr get-login-password`'s (moto's here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    with moto_server() as moto:
        for key, value in fake_aws_environment(moto).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}")
        password = ecr_login_password(moto)
        htpasswd = tmp_path / "htpasswd"
        htpasswd.write_text(f"AWS:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
        ecr = registry_factory("ecr", auth={"htpasswd": {"realm": "ecr", "path": str(htpasswd)}})
        digest = push_busybox(ecr.host, "docker-hub/library/busybox", "latest", marker="m",
                              credentials=("AWS", password))
        endpoint = endpoint_for(ecr.host)
        status, headers, _ = endpoint.get("/v2/library/busybox/manifests/latest")
    assert status == 200 and headers["Docker-Content-Digest"] == digest


def ecr_login_password(endpoint: str) -> str:
    """What `aws ecr get-login-password` prints against this moto server: the token's part after `AWS:`."""
    data = moto_client("ecr", endpoint).get_authorization_token()["authorizationData"][0]
    return base64.b64decode(data["authorizationToken"]).decode().split(":", 1)[1]


def test_an_unreachable_registry_is_one_line(capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(SetupError, match=f"registry 127.0.0.1:{port} is unreachable"):
        Registry(f"127.0.0.1:{port}").check()

"""setup_mirror.py: routing, the config files it writes, the endpoint against real loopback registries (plain,
and behind htpasswd with the password from `aws ecr get-login-password` against moto), the report; then the
setup run as the build runs it, against a real dockerd (tests/support/dockerd.py): a second run, several -H,
running containers, a remote daemon. A whole build is in test_end_to_end.py."""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from ecr_mirror_cdk.setup_mirror import (
    DAEMON_TIMEOUT,
    Journal,
    MirrorMap,
    Registry,
    SetupError,
    arguments,
    buildkit_config,
    daemon_config,
    daemon_hosts,
    endpoint_pid,
    handler,
    listen,
    local_api,
    main,
    parse_flags,
    report,
    state_files,
    stop_endpoint,
)
from tests.support import dockerd
from tests.support.busybox import push_busybox
from tests.support.moto import fake_aws_environment, moto_client, moto_server
from tests.support.registry import RegistryServer, free_port

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


# --- bad input, bad requests: one line, no traceback, nothing sent upstream -------------------------------


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
    with pytest.raises(SetupError, match=r"^dockerd listens on fd://: the setup needs a unix socket"):
        local_api(["fd://"], tls=False)
    with pytest.raises(SetupError, match="tcp://127.0.0.1:2376: the setup needs"):
        local_api(["tcp://127.0.0.1:2376"], tls=True)


def test_a_map_nested_too_deeply_is_one_line(capsys):
    deep = "[" * 20_000 + "]" * 20_000
    assert main(["--registry", "127.0.0.1:1", "--map", deep]) == 1
    assert capsys.readouterr().err == "setup_mirror: --map is not JSON: nested too deeply\n"


def raw_get(host: str, path: bytes) -> tuple[int, bytes]:
    """One request with the path's bytes as they are (http.client would refuse them)."""
    address, port = host.split(":")
    with socket.create_connection((address, int(port)), timeout=10) as sock:
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.mark.parametrize("path", [
    b"/v2/library/busybox/../../../secret/app/manifests/1",   # `..` segments
    b"/v2/library/%2e%2e/%2E%2E/secret/manifests/1",           # the same, percent-encoded
    b"/v2/library//busybox/manifests/latest",                  # an empty component
    b"/v2/Library/BusyBox/manifests/latest",                   # not lowercase
    b"/v2/library/busybox/manifests/lat%2Fest",                # not a tag
    b"/v2/library/busybox/blobs/latest",                       # a blob is named by digest
    "/v2/library/b\u00fcsybox/manifests/latest".encode(),      # non-ASCII (UTF-8)
    b"/v2/library/busybox\xff/manifests/latest",               # a byte that is no character
])
def test_a_name_that_is_not_a_repository_name_is_refused_before_anything_goes_upstream(
        path, registry, endpoint_for, tmp_path, capfd):
    endpoint = endpoint_for(registry.host)
    before = registry.requests()  # the probe of its start
    status, body = raw_get(endpoint.host, path)
    assert status == 400 and json.loads(body)["errors"][0]["code"] in ("NAME_INVALID", "DIGEST_INVALID")
    assert registry.requests() == before  # nothing reached the mirror's registry, not even a login
    assert "Traceback" not in capfd.readouterr().err
    line = report(tmp_path / "ep.pid")
    assert "; 1 refused by the endpoint, so the client went to the upstream: GET /v2/" in line and "400" in line


def test_a_name_under_no_mapped_prefix_is_not_asked_for(registry, endpoint_for):
    endpoint = endpoint_for(registry.host)
    before = registry.requests()
    status, _, body = endpoint.get("/v2/ghcr.io/org/app/manifests/1")
    assert status == 404 and b"the mirror holds nothing of ghcr.io" in body
    assert registry.requests() == before


def test_a_builder_that_puts_the_mirror_path_before_v2_is_recorded_and_the_report_names_its_buildkit(
        registry, endpoint_for, tmp_path):
    """BuildKit v0.11 asks a path mirror `127.0.0.1:PORT/quay.io` for /quay.io/v2/... (PR 3427 is in v0.12)."""
    push_busybox(registry.host, "docker-hub/library/busybox", "latest", marker="m")
    endpoint = endpoint_for(registry.host)
    endpoint.get("/v2/library/busybox/manifests/latest")
    status, _, _ = endpoint.get("/quay.io/v2/org/tool/manifests/1")
    assert status == 404
    line = report(tmp_path / "ep.pid")
    assert line.startswith("mirror: 1 manifests served by the mirror (docker.io 1); 1 refused by the endpoint, so "
                           "the client went to the upstream: GET /quay.io/v2/org/tool/manifests/1 (404 UNSUPPORTED")
    assert line.endswith("its BuildKit is older than v0.12 and cannot use path mirrors (moby/buildkit PR 3427), so "
                         "it pulled those images from the upstream")
    assert "no request fell back" not in line


class Redirecting(http.server.BaseHTTPRequestHandler):
    """A registry that answers every manifest with a redirect (none here does; ECR redirects only blobs)."""

    def do_GET(self):  # noqa: N802
        self.send_response(307)
        self.send_header("Location", "http://127.0.0.1:9/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):
        pass


def test_a_manifest_redirect_is_not_counted_as_served(endpoint_for, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = endpoint_for(f"127.0.0.1:{server.server_address[1]}")
        status, _, _ = endpoint.get("/v2/library/busybox/manifests/latest")
    finally:
        server.shutdown()
    assert status == 404  # the client falls back, rather than follow a manifest elsewhere
    assert report(tmp_path / "ep.pid") == (
        "mirror: 0 manifests served by the mirror; 1 fell back to the upstream: docker.io/library/busybox:latest "
        "(docker-hub/library/busybox: 307 redirect, not followed for a manifest)")


def test_concurrent_pulls_after_a_401_log_in_once(registry_factory, endpoint_for, tmp_path, monkeypatch):
    """Ten pulls refused with the same expired token: one `aws ecr get-login-password`, its token for all ten."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    with moto_server() as moto:
        for key, value in fake_aws_environment(moto).items():
            monkeypatch.setenv(key, value)
        # `aws` counts its runs; its first answer is a token the registry refuses, as an expired one is.
        calls = tmp_path / "aws-calls"
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "aws").write_text(
            f'#!/bin/sh\necho run >> "{calls}"\n'
            f'if [ "$(wc -l < "{calls}")" -eq 1 ]; then echo expired-token; exit 0; fi\n'
            f'exec "{Path(sys.executable).parent / "aws"}" "$@"\n')
        (bin_dir / "aws").chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
        password = ecr_login_password(moto)
        htpasswd = tmp_path / "htpasswd"
        # bcrypt's lowest cost: the registry checks it on each of the twenty requests.
        htpasswd.write_text(f"AWS:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}\n")
        ecr = registry_factory("ecr", auth={"htpasswd": {"realm": "ecr", "path": str(htpasswd)}})
        digest = push_busybox(ecr.host, "docker-hub/library/busybox", "latest", marker="m",
                              credentials=("AWS", password))
        endpoint = endpoint_for(ecr.host)
        assert endpoint.get("/v2/library/busybox/manifests/latest")[0] == 404  # logged in, with the expired token
        start = threading.Barrier(10)
        results = []

        def pull():
            start.wait()
            status, headers, _ = endpoint.get("/v2/library/busybox/manifests/latest")
            results.append((status, headers.get("Docker-Content-Digest")))

        pulls = [threading.Thread(target=pull) for _ in range(10)]
        for thread in pulls:
            thread.start()
        for thread in pulls:
            thread.join(60)
    assert results == [(200, digest)] * 10
    assert len(calls.read_text().splitlines()) == 2  # the expired login, then one for all ten


# --- the setup as the build runs it, on a real dockerd ------------------------------------------------------

SETUP = Path(__file__).resolve().parents[2] / "ecr_mirror_cdk" / "setup_mirror.py"
needs_dockerd = pytest.mark.skipif(dockerd.available() is not None, reason=str(dockerd.available()))


@dataclass
class Host:
    """A build host: its dockerd, the mirror's registry holding busybox, and the setup's files."""

    daemon: dockerd.DockerDaemon
    registry: RegistryServer

    @property
    def endpoint_pidfile(self) -> Path:
        return self.daemon.root / "mirror-endpoint.pid"

    @property
    def buildkit_config(self) -> Path:
        return self.daemon.root / "buildkitd.toml"

    def setup(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        environ = {key: value for key, value in os.environ.items() if not key.startswith("MIRROR_")}
        environ |= self.daemon.env | {"MIRROR_DAEMON_PIDFILE": str(self.daemon.pidfile),
                                      "MIRROR_ENDPOINT_PIDFILE": str(self.endpoint_pidfile),
                                      "MIRROR_BUILDKIT_CONFIG": str(self.buildkit_config)} | env
        return subprocess.run([sys.executable, str(SETUP), "--registry", self.registry.host, *args], env=environ,
                              capture_output=True, text=True, timeout=240)

    def endpoint(self) -> int | None:
        return endpoint_pid(self.endpoint_pidfile)

    def mirrors(self) -> list[str]:
        info = self.daemon.docker("info", "--format", "{{json .RegistryConfig.Mirrors}}").stdout
        return [m.rstrip("/") for m in json.loads(info) or []]

    def pulls_busybox_through_the_mirror(self) -> bool:
        """`docker pull busybox` succeeds (Docker Hub is unreachable here) and the mirror's registry was asked."""
        self.daemon.docker("rmi", "-f", "busybox", check=False)
        before = len(self.manifest_requests())
        if self.daemon.docker("pull", "busybox", check=False).returncode != 0:
            return False
        deadline = time.monotonic() + 5  # the registry logs a request once it has answered it
        while len(self.manifest_requests()) == before:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def manifest_requests(self) -> list[str]:
        """GET or HEAD: dockerd asks a tag it has seen with HEAD, then only the layers it lacks."""
        prefix = "/v2/docker-hub/library/busybox/manifests/"
        return [r.path for r in self.registry.requests() if r.path.startswith(prefix)]


@pytest.fixture
def host_for(registry, tmp_path):
    started: list[Host] = []
    push_busybox(registry.host, "docker-hub/library/busybox", "latest", marker="m")

    def start(**options) -> Host:
        host = Host(dockerd.DockerDaemon(**options).start(), registry)
        started.append(host)
        return host

    yield start
    for host in started:
        stop_endpoint(host.endpoint_pidfile)
        host.daemon.stop()


def one_error_line(result: subprocess.CompletedProcess[str], message: str) -> bool:
    return (result.returncode == 1 and result.stderr.count("\n") == 1 and result.stderr.startswith("setup_mirror: ")
            and message in result.stderr and "Traceback" not in result.stderr)


@needs_dockerd
@pytest.mark.parametrize("failure", ["the port is taken", "dockerd restarts without the mirror"])
def test_a_second_run_that_fails_leaves_the_first_one_serving(host_for, failure):
    # Given a host the setup has pointed at its endpoint
    host = host_for()
    assert host.setup().returncode == 0
    first, config, daemon_pid = host.endpoint(), host.daemon.config_path.read_bytes(), host.daemon.pid()
    assert first and host.mirrors() and host.pulls_busybox_through_the_mirror()

    # When a second run fails: before binding its port, or after it restarted dockerd
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        if failure == "the port is taken":
            result = host.setup("--port", str(port))
            assert one_error_line(result, f"--port {port}: cannot listen on 127.0.0.1:{port}"), result.stderr
            assert host.daemon.pid() == daemon_pid  # never restarted
        else:  # a daemon.json dockerd does not read: found out only once it has restarted
            result = host.setup("--daemon-config", str(host.daemon.root / "other.json"))
            assert one_error_line(result, "dockerd restarted but does not list the mirror"), result.stderr
            assert not (host.daemon.root / "other.json").exists()

    # Then the first endpoint still serves, named by the pidfile and by daemon.json, and pulls come through it
    assert host.endpoint() == first
    assert host.daemon.config_path.read_bytes() == config
    assert host.mirrors() == json.loads(config)["registry-mirrors"]
    assert host.pulls_busybox_through_the_mirror()


@needs_dockerd
def test_a_daemon_listening_on_several_hosts_is_found_on_its_socket(host_for):
    """CodeBuild's images start dockerd with -H unix:///var/run/docker.sock -H tcp://127.0.0.1:2375."""
    tcp = f"tcp://127.0.0.1:{free_port()}"
    host = host_for(hosts=(tcp,))
    started = time.monotonic()
    result = host.setup(DOCKER_HOST=tcp)  # the client on its TCP port: still this host's daemon
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < DAEMON_TIMEOUT / 2
    assert result.stdout.startswith(f"mirror: dockerd (pid {host.daemon.pid()}) and BuildKit")
    assert host.mirrors() == json.loads(host.daemon.config_path.read_text())["registry-mirrors"]
    assert host.daemon.processes() == [host.daemon.pid()]
    assert host.pulls_busybox_through_the_mirror()


@needs_dockerd
def test_running_containers_keep_running_through_the_restart(host_for):
    # Given a container running before the setup
    host = host_for()
    image = f"{host.registry.host}/docker-hub/library/busybox:latest"
    host.daemon.docker("pull", image)
    container = host.daemon.docker("run", "-d", "--network", "none", image, "busybox", "sleep", "600").stdout.strip()
    before = host.daemon.docker("inspect", "--format", "{{.State.Pid}}", container).stdout

    # When the setup restarts dockerd
    result = host.setup()

    # Then the container is the same process, still running, and the setup says so
    assert result.returncode == 0, result.stderr
    assert host.daemon.docker("inspect", "--format", "{{.State.Running}} {{.State.Pid}}", container).stdout == \
        f"true {before}"
    assert result.stdout.rstrip().endswith("; 1 of 1 running containers kept running through the restart "
                                           "(live-restore)")
    assert json.loads(host.daemon.config_path.read_text())["live-restore"] is True


@needs_dockerd
def test_with_a_remote_daemon_only_buildkit_is_configured_and_no_daemon_is_touched(host_for):
    """A CodeBuild Docker server: DOCKER_HOST names a daemon elsewhere, here a second dockerd on loopback TCP."""
    # Given a local dockerd the setup could restart, and a "remote" one the client talks to
    local = host_for()
    tcp = f"tcp://127.0.0.1:{free_port()}"
    remote = host_for(hosts=(tcp,))
    daemons = [(h.daemon.pid(), h.daemon.config_path.read_bytes()) for h in (local, remote)]

    # When the setup runs with DOCKER_HOST naming the remote one
    result = local.setup(DOCKER_HOST=tcp)

    # Then it prints one line naming what is not covered, and restarts or rewrites no daemon
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and result.stdout.startswith(
        f"mirror: the Docker daemon is remote ({tcp}) and is left as it is: buildx builders")
    assert "not covered: the remote daemon's own pulls (docker pull, docker run" in result.stdout
    assert [(h.daemon.pid(), h.daemon.config_path.read_bytes()) for h in (local, remote)] == daemons
    assert local.endpoint() is None
    # and builders pull straight from ECR's cache prefixes
    registries = tomllib.loads(local.buildkit_config.read_text())["registry"]
    assert registries["docker.io"]["mirrors"] == [f"{local.registry.host}/docker-hub"]
    assert registries["quay.io"]["mirrors"] == [f"{local.registry.host}/quay"]
    assert registries[local.registry.host] == {"http": True}
    assert local.setup("--report").stdout.startswith("mirror: the Docker daemon is remote")


@needs_dockerd
def test_a_failed_run_leaves_exactly_the_daemon_and_the_file_it_found(host_for):
    # Given a dockerd with a socket of its own and a TCP port, and nothing else of its kind running
    host = host_for(hosts=(f"tcp://127.0.0.1:{free_port()}",))
    config = host.daemon.config_path.read_bytes()
    assert host.daemon.processes() == [host.daemon.pid()]

    # When the setup fails after it has restarted dockerd
    started = time.monotonic()
    result = host.setup("--daemon-config", str(host.daemon.root / "other.json"))
    took = time.monotonic() - started

    # Then it says so in one line, without waiting out a timeout on a socket the daemon does not have
    assert one_error_line(result, "dockerd restarted but does not list the mirror"), result.stderr
    assert took < DAEMON_TIMEOUT / 2
    # and leaves one dockerd, started as it was, answering on its socket with its own configuration
    (pid,) = host.daemon.processes()
    assert host.daemon.pid() == pid
    assert host.mirrors() == []
    assert host.daemon.config_path.read_bytes() == config
    assert not (host.daemon.root / "other.json").exists() and not host.buildkit_config.exists()
    # and no endpoint
    assert host.endpoint() is None and not endpoint_processes(host.endpoint_pidfile)


def endpoint_processes(pidfile: Path) -> list[int]:
    marker = str(pidfile).encode()
    return [int(proc.name) for proc in Path("/proc").iterdir()
            if proc.name.isdigit() and marker in read_bytes(proc / "cmdline")]


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_a_mirrored_registry_with_a_port_is_asked_under_the_name_the_mirror_gives_it() -> None:
    # Given the stack's map for an image of registry.example.com:5000 at its default location
    from ecr_mirror_cdk.config import parse_config
    from ecr_mirror_cdk.contract import mirror_map
    config = parse_config({"images": [{"source": "registry.example.com:5000/team/app", "tags": ["1"]}]})
    mirror = MirrorMap.parse(mirror_map(config))

    # When a build asks for it
    _, _, candidates = mirror.route("registry.example.com:5000/team/app")

    # Then the endpoint asks for the repository the copier fills
    assert candidates == [config.images[0].repository] == ["mirror/registry.example.com-5000/team/app"]


def test_a_home_registry_equal_to_the_registry_is_the_home_region_and_is_ignored() -> None:
    # The contract names the home registry in every region; in the home region it is the registry itself.
    from ecr_mirror_cdk.setup_mirror import arguments
    args = arguments(["--registry", "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                      "--home-registry", "123456789012.dkr.ecr.us-east-1.amazonaws.com"])

    assert args.home_registry is None

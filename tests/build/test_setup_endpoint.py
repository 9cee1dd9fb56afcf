"""The setup's endpoint against real loopback registries (plain, and behind htpasswd with the password from
`aws ecr get-login-password` against moto), bad requests refused before anything goes upstream, and the report
of what it journaled."""

from __future__ import annotations

import argparse
import base64
import http.client
import http.server
import json
import re
import socket
import struct
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from ecr_mirror_cdk.setup.base import SetupError, end
from ecr_mirror_cdk.setup.ecr import Registry
from ecr_mirror_cdk.setup.endpoint import (
    Journal,
    Server,
    handler,
    listen,
    start_endpoint,
    state_files,
    wait_for_endpoint,
)
from ecr_mirror_cdk.setup.mirror_map import DEFAULT_MAP, MirrorMap
from ecr_mirror_cdk.setup.report import report
from tests.build.test_setup_config import MAP
from tests.support.busybox import push_busybox
from tests.support.moto import fake_aws_environment, moto_client, moto_server

# --- the endpoint against real registries -------------------------------------------------------------


class Endpoint:
    """The endpoint's server and handler in this process, on a free loopback port."""

    def __init__(self, registry: Registry, mirror: MirrorMap, journal: Path, home: Registry | None = None) -> None:
        self.server = Server(("127.0.0.1", 0), handler(registry, mirror, Journal(journal), home))
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def get(self, path: str, accept: str = "application/vnd.docker.distribution.manifest.v2+json"):
        connection = http.client.HTTPConnection(self.host, timeout=10)
        connection.request("GET", path, headers={"Accept": accept})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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


def test_a_registry_that_asks_for_a_login_gets_the_ecr_password_from_the_aws_cli(registry_factory, endpoint_for,
                                                                                   tmp_path, monkeypatch):
    """ECR answers 401 with a Basic challenge; the password is `aws ecr get-login-password`'s (moto's here)."""
    with moto_server() as moto:
        for key, value in fake_aws_environment(moto).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}")
        ecr, digest = login_registry(registry_factory, tmp_path, ecr_login_password(moto))
        endpoint = endpoint_for(ecr.host)
        status, headers, _ = endpoint.get("/v2/library/busybox/manifests/latest")
    assert status == 200 and headers["Docker-Content-Digest"] == digest


def ecr_login_password(endpoint: str) -> str:
    """What `aws ecr get-login-password` prints against this moto server: the token's part after `AWS:`."""
    data = moto_client("ecr", endpoint).get_authorization_token()["authorizationData"][0]
    return base64.b64decode(data["authorizationToken"]).decode().split(":", 1)[1]


def login_registry(registry_factory, tmp_path: Path, password: str):
    """A registry that answers 401 with a Basic challenge, as ECR does, taking user AWS and `password`; busybox in
    the docker-hub prefix. Returns the registry and busybox's digest."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    htpasswd = tmp_path / "htpasswd"
    # bcrypt's lowest cost: the registry checks it on every request.
    htpasswd.write_text(f"AWS:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}\n")
    ecr = registry_factory("ecr", auth={"htpasswd": {"realm": "ecr", "path": str(htpasswd)}})
    digest = push_busybox(ecr.host, "docker-hub/library/busybox", "latest", marker="m", credentials=("AWS", password))
    return ecr, digest


def test_an_unreachable_registry_is_one_line(capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(SetupError, match=f"registry 127.0.0.1:{port} is unreachable"):
        Registry(f"127.0.0.1:{port}").check()


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
    assert ("; a builder put a mirror's path before /v2/: its BuildKit is older than v0.12 and cannot use path "
            "mirrors (moby/buildkit PR 3427), so it pulled those images from the upstream; ") in line
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
    assert report(tmp_path / "ep.pid").startswith(
        "mirror: 0 manifests served by the mirror; 1 fell back to the upstream: docker.io/library/busybox:latest "
        "(docker-hub/library/busybox: 307 redirect, not followed for a manifest); ")


def test_concurrent_pulls_after_a_401_log_in_once(registry_factory, endpoint_for, tmp_path, monkeypatch):
    """Ten pulls refused with the same expired token: one `aws ecr get-login-password`, its token for all ten."""
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
        ecr, digest = login_registry(registry_factory, tmp_path, ecr_login_password(moto))
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


def test_a_client_that_drops_the_connection_mid_request_is_one_line_in_the_endpoints_log(registry, tmp_path):
    # Given the endpoint running in the background as a setup starts it, its output in its log
    args = argparse.Namespace(registry=registry.host, map=json.dumps(DEFAULT_MAP), home_registry=None,
                              endpoint_pidfile=tmp_path / "ep.pid")
    listener = listen(0)
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    log = state_files(args.endpoint_pidfile)["log"]
    pid = start_endpoint(args, listener, fresh=True)
    try:
        wait_for_endpoint(address, pid, log)
        # When a client sends half a request and resets the connection (SO_LINGER 0: RST, not FIN)
        with socket.create_connection(("127.0.0.1", int(address.split(":")[1])), timeout=10) as client:
            client.sendall(b"GET /v2/library/busybox/manifests/latest HTTP/1.1\r\nHost: x\r\n")
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        deadline = time.monotonic() + 10
        while not log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        # Then the endpoint still serves, and its log has one line for it
        connection = http.client.HTTPConnection(address, timeout=10)
        connection.request("GET", "/v2/")
        assert connection.getresponse().status == 200
    finally:
        end(pid, 5)
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and "Traceback" not in log.read_text(), lines
    assert re.fullmatch(r"setup_mirror: endpoint: 127\.0\.0\.1:\d+ dropped the connection mid-request "
                        r"\(ConnectionResetError\)", lines[0])

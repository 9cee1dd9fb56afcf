"""ECR's token in long builds: it lasts 12 hours (GetAuthorizationToken), and ECR answers an expired one with 403,
not 401. A small front on loopback plays ECR's authentication in front of a real docker-registry: a Basic challenge
without a token, 403 with ECR's message for a token it calls expired, 403 with an IAM message for a repository the
token may not read; the `aws` on PATH hands out a new token on each login and counts them."""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import threading
from pathlib import Path

import pytest

from ecr_mirror_cdk.setup.ecr import RETRY_LOGIN, TOKEN_USE, Registry
from tests.build.test_setup_config import MAP
from tests.build.test_setup_endpoint import Endpoint
from tests.support.busybox import push_busybox

MANIFEST = "/v2/library/busybox/manifests/latest"
EXPIRED = "Your authorization token has expired. Reauthenticate and try again."  # ECR's, as soci-snapshotter reads it


class EcrFront:
    """ECR's authentication in front of a docker-registry; records (status, password) of every request."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.expired: set[str] = set()
        self.denied: set[str] = set()  # repositories no token may read
        self.answers: list[tuple[int, str | None]] = []
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> EcrFront:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def refusals(self) -> list[int]:
        return [status for status, _ in self.answers if status in (401, 403)]

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                header = self.headers.get("Authorization", "")
                password = base64.b64decode(header[6:]).decode().split(":", 1)[1] if header else None
                if password is None:
                    return self.answer(401, "UNAUTHORIZED", "authentication required", password,
                                       {"WWW-Authenticate": 'Basic realm="ecr"'})
                if password in front.expired:
                    return self.answer(403, "DENIED", EXPIRED, password)
                if any(self.path.startswith(f"/v2/{name}/") for name in front.denied):
                    return self.answer(403, "DENIED", "User: arn:aws:sts::123456789012:assumed-role/build is not "
                                                      "authorized to perform: ecr:BatchGetImage", password)
                connection = http.client.HTTPConnection(front.backend, timeout=10)
                connection.request(self.command, self.path, headers={"Accept": self.headers.get("Accept", "*/*")})
                response = connection.getresponse()
                body = response.read()
                front.answers.append((response.status, password))
                self.send_response(response.status)
                for name in ("Content-Type", "Content-Length", "Docker-Content-Digest"):
                    if response.getheader(name):
                        self.send_header(name, response.getheader(name))
                self.end_headers()
                self.wfile.write(body)

            do_HEAD = do_GET  # noqa: N815

            def answer(self, status: int, code: str, message: str, password: str | None,
                       headers: dict[str, str] | None = None) -> None:
                front.answers.append((status, password))
                body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        return Handler


class Aws:
    """`aws` on PATH: each `aws ecr get-login-password` prints token-N (N counts the logins), or fails on demand."""

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls, self.failing = directory / "aws-calls", directory / "aws-fails"
        bin_dir = directory / "bin"
        bin_dir.mkdir()
        (bin_dir / "aws").write_text(
            f'#!/bin/sh\necho "$*" >> "{self.calls}"\n'
            f'if [ -e "{self.failing}" ]; then echo "Unable to locate credentials" >&2; exit 253; fi\n'
            f'echo "token-$(wc -l < "{self.calls}")"\n')
        (bin_dir / "aws").chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")

    def logins(self) -> int:
        return len(self.calls.read_text().splitlines()) if self.calls.exists() else 0


@pytest.fixture
def ecr(registry):
    """The front over a registry holding busybox; yields (front, busybox's digest)."""
    digest = push_busybox(registry.host, "docker-hub/library/busybox", "latest", marker="m")
    with EcrFront(registry.host) as front:
        yield front, digest


def head(endpoint: Endpoint, path: str) -> int:
    connection = http.client.HTTPConnection(endpoint.host, timeout=10)
    connection.request("HEAD", path, headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    return connection.getresponse().status


def test_a_token_ecr_calls_expired_is_replaced_by_one_login_for_all_the_pulls_it_refused(
        ecr, tmp_path, monkeypatch):
    front, digest = ecr
    aws = Aws(tmp_path, monkeypatch)
    endpoint = Endpoint(Registry(front.host), MAP, tmp_path / "ep.requests")
    try:
        assert endpoint.get(MANIFEST)[0] == 200 and aws.logins() == 1  # the first login, on ECR's 401
        # Given ECR now answers the build's token with 403 "expired"
        front.expired.add("token-1")
        # When ten pulls ask at once
        start, results = threading.Barrier(10), []

        def pull() -> None:
            start.wait()
            status, headers, _ = endpoint.get(MANIFEST)
            results.append((status, headers.get("Docker-Content-Digest")))

        pulls = [threading.Thread(target=pull) for _ in range(10)]
        for thread in pulls:
            thread.start()
        for thread in pulls:
            thread.join(60)
        # And later a HEAD (BuildKit's first request) meets the next expiry; its answer has no body to say why
        front.expired.add("token-2")
        head_status = head(endpoint, MANIFEST)
    finally:
        endpoint.stop()
    # Then every pull is served, after one login for the ten and one for the HEAD
    assert results == [(200, digest)] * 10
    assert head_status == 200
    assert aws.logins() == 3
    assert "fell back" not in (tmp_path / "ep.requests").read_text()


def test_a_403_that_is_not_an_expired_token_is_passed_on_and_costs_no_login(ecr, tmp_path, monkeypatch):
    front, _ = ecr
    aws = Aws(tmp_path, monkeypatch)
    front.denied.add("docker-hub/library/busybox")
    endpoint = Endpoint(Registry(front.host), MAP, tmp_path / "ep.requests")
    try:
        get_status, _, body = endpoint.get(MANIFEST)
        head_status = head(endpoint, MANIFEST)
    finally:
        endpoint.stop()
    assert (get_status, head_status) == (404, 404)  # the client falls back to the upstream
    assert b"403 DENIED (User: arn:aws:sts::123456789012:assumed-role/build is not authorized" in body
    assert aws.logins() == 1


def test_a_token_is_replaced_after_11_hours_before_ecr_refuses_it(ecr, tmp_path, monkeypatch, clock):
    front, digest = ecr
    aws = Aws(tmp_path, monkeypatch)
    endpoint = Endpoint(Registry(front.host, clock=clock), MAP, tmp_path / "ep.requests")
    try:
        first = endpoint.get(MANIFEST)[0]
        clock.now += TOKEN_USE - 1
        before = endpoint.get(MANIFEST)[0]
        logins_before = aws.logins()
        clock.now += 1
        after, headers, _ = endpoint.get(MANIFEST)
    finally:
        endpoint.stop()
    assert (first, before, after) == (200, 200, 200) and headers["Docker-Content-Digest"] == digest
    assert (logins_before, aws.logins()) == (1, 2)
    assert front.answers[-1] == (200, "token-2")  # sent with the new token straight away
    assert front.refusals() == [401]  # only the first request's challenge: ECR never had to refuse a token


def test_a_renewal_that_fails_keeps_the_old_token_and_is_tried_again_5_minutes_later(
        ecr, tmp_path, monkeypatch, clock):
    front, _ = ecr
    aws = Aws(tmp_path, monkeypatch)
    endpoint = Endpoint(Registry(front.host, clock=clock), MAP, tmp_path / "ep.requests")
    try:
        endpoint.get(MANIFEST)
        aws.failing.touch()
        clock.now += TOKEN_USE
        statuses = [endpoint.get(MANIFEST)[0] for _ in range(3)]
        tried = aws.logins()
        aws.failing.unlink()
        clock.now += RETRY_LOGIN
        statuses.append(endpoint.get(MANIFEST)[0])
    finally:
        endpoint.stop()
    assert statuses == [200] * 4
    assert tried == 2  # one failed renewal for the three pulls, each served with the old token
    assert aws.logins() == 3 and front.answers[-1] == (200, "token-3")

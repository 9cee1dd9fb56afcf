"""The registry the mirror lives in (ECR, or a loopback registry in tests): HTTP to it, through the build's
proxy if it has one, and ECR's login, renewed before its token expires."""

from __future__ import annotations

import base64
import http.client
import io
import os
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import NamedTuple, Protocol

from .base import SetupError, is_loopback

_ECR_HOST = re.compile(r"\d{12}\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?")
# "The authorization token is valid for 12 hours" (ECR API reference, GetAuthorizationToken), and a CodeBuild build
# may run 36 (CodeBuild API, timeoutInMinutes: 5 to 2160). `aws ecr get-login-password` prints the password alone,
# not the token's `expiresAt` (AWS CLI reference), so a token is used for 11 hours from its login and then
# replaced: an hour's margin over a login that takes seconds, on a clock that wall-clock changes do not move.
TOKEN_USE = 11 * 3600.0
RETRY_LOGIN = 300.0  # a renewal that failed is tried again after 5 minutes; the old token still has an hour
# ECR answers an expired token with 403 and no challenge, its error saying "Your authorization token has expired.
# Reauthenticate and try again." (AWS's awslabs/soci-snapshotter, service/resolver/client.go, logs in again on that
# message, citing the ECR user guide's docker troubleshooting, common-errors-docker.html#error-403). Any other 403
# (IAM refusing a repository) is passed on without a login.
_EXPIRED = b"authorization token has expired"


class Response(Protocol):
    """What the endpoint reads of an answer: http.client's response, or one whose body was read already."""

    status: int

    def getheader(self, name: str) -> str | None: ...

    def read(self, amt: int | None = None) -> bytes: ...


class Read:
    """An error answer whose body the registry client read to see why (ECR's expired token): status, headers, body."""

    def __init__(self, response: http.client.HTTPResponse, body: bytes) -> None:
        self.status = response.status
        self._response = response
        self._body = io.BytesIO(body)

    def getheader(self, name: str) -> str | None:
        return self._response.getheader(name)

    def read(self, amt: int | None = None) -> bytes:
        return self._body.read(amt)


class Proxy(NamedTuple):
    host: str
    port: int
    headers: dict[str, str]  # Proxy-Authorization, from the URL's user:password

    def __str__(self) -> str:  # where, never who: the credentials stay out of every message
        return f"{self.host}:{self.port}"


def https_proxy(host: str) -> Proxy | None:
    """The proxy a connection to `host` over HTTPS goes through, chosen as the AWS CLI chooses it.

    botocore (utils.get_environ_proxies) takes urllib's getproxies() unless proxy_bypass(host) finds the host in
    NO_PROXY/no_proxy (a DNS suffix per entry, `*` for all; lowercase names win), adds `http://` to a URL without a
    scheme and sends the URL's user:password as Proxy-Authorization (httpsession.ProxyConfiguration). Unlike
    botocore, loopback is never proxied, as dockerd's Go never proxies it (golang.org/x/net/http/httpproxy useProxy).
    A project behind an explicit proxy sets HTTP_PROXY, HTTPS_PROXY and NO_PROXY (CodeBuild user guide, "Use AWS
    CodeBuild with a proxy server").
    """
    url = urllib.request.getproxies().get("https")  # on Linux, from the environment alone
    if is_loopback(host) or not url or urllib.request.proxy_bypass(host):
        return None
    if url.startswith("//"):
        url = "http:" + url
    elif "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or 80
    except ValueError:
        raise SetupError(f"HTTPS_PROXY: the proxy {parts.hostname}'s port is not a number") from None
    if parts.scheme != "http" or not parts.hostname:
        raise SetupError(f"HTTPS_PROXY: only an http:// proxy with a host is supported, got {parts.scheme}:// "
                         f"{parts.hostname or 'without a host'}")
    headers = {}
    if parts.username and parts.password:
        secret = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password)}"
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
    return Proxy(parts.hostname, port, headers)


class Registry:
    """HTTP to the mirror's registry: plain HTTP on loopback only, HTTPS otherwise (through the build's proxy if it
    names one); the ECR login on a 401, on an expired token's 403, and before a token's 11 hours are up.

    One connection per thread, reused. Redirects are returned, never followed: a blob GET on ECR answers
    307 to S3, and the client fetches from S3 itself.
    """

    def __init__(self, host: str, *, timeout: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.timeout = timeout
        self.plain = is_loopback(host)
        self.proxy = None if self.plain else https_proxy(host)
        self._clock = clock
        self._local = threading.local()
        self._lock = threading.Lock()
        self._authorization: str | None = None
        self._renew_at = 0.0

    def request(self, method: str, path: str, headers: dict[str, str]) -> Response:
        used = self._current()
        response = self._send(method, path, headers, used)
        if response.status == 401 and "basic" in (response.getheader("WWW-Authenticate") or "").lower():
            response.read()
            return self._send(method, path, headers, self._login(refused=used))
        if response.status == 403 and used is not None:
            body = response.read()
            if self._expired(method, path, headers, used, body):
                return self._send(method, path, headers, self._login(refused=used))
            return Read(response, body)
        return response

    def _current(self) -> str | None:
        """The token to send: renewed once its time is up, by one request for all; kept if the renewal fails."""
        used = self._authorization
        if used is None or self._clock() < self._renew_at:
            return used
        with self._lock:
            if self._authorization == used and self._clock() >= self._renew_at:
                try:
                    self._authorization = self._token()
                except SetupError:  # the old token has an hour left; ECR's 403 still asks for a login at the end
                    self._renew_at = self._clock() + RETRY_LOGIN
            return self._authorization

    def _expired(self, method: str, path: str, headers: dict[str, str], used: str, body: bytes) -> bool:
        """Whether a 403 is ECR's expired token; a HEAD's answer has no body, so the same GET's tells."""
        if method == "HEAD":
            probe = self._send("GET", path, headers, used)
            if probe.status != 403:  # not refused after all: drop the connection rather than read a blob
                self._drop()
                return False
            body = probe.read()
        return _EXPIRED in body.lower()

    def _send(self, method: str, path: str, headers: dict[str, str],
              authorization: str | None) -> http.client.HTTPResponse:
        headers = dict(headers, **({"Authorization": authorization} if authorization else {}))
        for attempt in (1, 2):
            connection = self._connection()
            try:
                connection.request(method, path, headers=headers)
                return connection.getresponse()
            except (OSError, http.client.HTTPException):
                self._drop()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            if self.plain:
                connection = http.client.HTTPConnection(self.host, timeout=self.timeout)
            elif self.proxy:  # CONNECT through the proxy, then TLS with the registry inside the tunnel
                connection = http.client.HTTPSConnection(self.proxy.host, self.proxy.port, timeout=self.timeout)
                connection.set_tunnel(self.host, headers=self.proxy.headers)
            else:
                connection = http.client.HTTPSConnection(self.host, timeout=self.timeout)
            self._local.connection = connection
        return connection

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
        self._local.connection = None

    def _login(self, *, refused: str | None) -> str:
        """One login at a time; requests refused with the same token reuse the login the first one made."""
        with self._lock:
            if self._authorization is None or self._authorization == refused:
                self._authorization = self._token()
            return self._authorization

    def _token(self) -> str:
        """A new login (with the lock held), and when to renew it."""
        password = ecr_password(self.host)
        self._renew_at = self._clock() + TOKEN_USE
        return "Basic " + base64.b64encode(f"AWS:{password}".encode()).decode()

    def check(self) -> None:
        """Answer `GET /v2/` (logging in if asked), or raise SetupError naming what failed."""
        via = f" through the proxy {self.proxy} (HTTPS_PROXY)" if self.proxy else ""
        try:
            response = self.request("GET", "/v2/", {})
            response.read()
        except (OSError, http.client.HTTPException) as err:
            raise SetupError(f"registry {self.host} is unreachable{via}: {err}") from None
        if response.status != 200:
            raise SetupError(f"registry {self.host} answered GET /v2/ with HTTP {response.status}{via}")


def ecr_password(host: str) -> str:
    """The ECR token, from the AWS CLI (in every CodeBuild image) with the build's own credentials.

    The CLI inherits this process's environment (no `env=`), so it finds the build's proxy (HTTPS_PROXY, NO_PROXY)
    and credentials as any command of the buildspec does.
    """
    match = _ECR_HOST.fullmatch(host)
    region = match["region"] if match else os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    command = ["aws", "ecr", "get-login-password"] + (["--region", region] if region else [])
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SetupError(f"registry {host} asks for a login and `aws ecr get-login-password` failed: {err}") from None
    if result.returncode != 0 or not result.stdout.strip():
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SetupError(f"registry {host} asks for a login and `aws ecr get-login-password` failed: {last}")
    return result.stdout.strip()

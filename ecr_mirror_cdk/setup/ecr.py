"""The registry the mirror lives in (ECR, or a loopback registry in tests): HTTP to it, and ECR's login."""

from __future__ import annotations

import base64
import http.client
import os
import re
import subprocess
import threading

from .base import SetupError, is_loopback

_ECR_HOST = re.compile(r"\d{12}\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?")


class Registry:
    """HTTP to the mirror's registry: plain HTTP on loopback only, HTTPS otherwise; ECR login on a 401.

    One connection per thread, reused. Redirects are returned, never followed: a blob GET on ECR answers
    307 to S3, and the client fetches from S3 itself.
    """

    def __init__(self, host: str, *, timeout: float = 30.0) -> None:
        self.host = host
        self.timeout = timeout
        self.plain = is_loopback(host)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._authorization: str | None = None

    def request(self, method: str, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        used = self._authorization
        response = self._send(method, path, headers, used)
        if response.status == 401 and "basic" in response.getheader("WWW-Authenticate", "").lower():
            response.read()
            response = self._send(method, path, headers, self._login(refused=used))
        return response

    def _send(self, method: str, path: str, headers: dict[str, str],
              authorization: str | None) -> http.client.HTTPResponse:
        headers = dict(headers, **({"Authorization": authorization} if authorization else {}))
        for attempt in (1, 2):
            connection = self._connection()
            try:
                connection.request(method, path, headers=headers)
                return connection.getresponse()
            except (OSError, http.client.HTTPException):
                connection.close()
                self._local.connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            kind = http.client.HTTPConnection if self.plain else http.client.HTTPSConnection
            connection = kind(self.host, timeout=self.timeout)
            self._local.connection = connection
        return connection

    def _login(self, *, refused: str | None) -> str:
        """One login at a time; requests refused with the same token reuse the login the first one made."""
        with self._lock:
            if self._authorization is None or self._authorization == refused:
                self._authorization = "Basic " + base64.b64encode(f"AWS:{ecr_password(self.host)}".encode()).decode()
            return self._authorization

    def check(self) -> None:
        """Answer `GET /v2/` (logging in if asked), or raise SetupError naming what failed."""
        try:
            response = self.request("GET", "/v2/", {})
            response.read()
        except (OSError, http.client.HTTPException) as err:
            raise SetupError(f"registry {self.host} is unreachable: {err}") from None
        if response.status != 200:
            raise SetupError(f"registry {self.host} answered GET /v2/ with HTTP {response.status}")


def ecr_password(host: str) -> str:
    """The ECR token, from the AWS CLI (in every CodeBuild image) with the build's own credentials."""
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

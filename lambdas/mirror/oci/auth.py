"""Registry authentication: Basic, and Docker token auth (Bearer) with tokens cached per scope.

The scheme is learnt from the registry's first 401 challenge, so no credentials go to a registry
that did not ask for them. ECR is Basic with username "AWS" and the GetAuthorizationToken password.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import urllib3

from .errors import RegistryError

_PARAM = re.compile(r'([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')
# Tokens are refreshed this long before the issuer says they expire.
_EXPIRY_MARGIN = 10.0
_DEFAULT_TOKEN_LIFETIME = 60.0  # what the token spec says to assume when expires_in is absent
# Follow a realm's redirects (Docker's client does), and retry nothing else.
_TOKEN_RETRIES = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5)

# A scope is (repository, actions), e.g. ("library/python", "pull") or ("mirror/app", "pull,push").
Scope = tuple[str, str]


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" or "bearer", lowercased
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="..."`."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    params = {m[1].lower(): (m[2] if m[2] is not None else m[3]) for m in _PARAM.finditer(rest)}
    return Challenge(scheme.lower(), params)


def scope_strings(scopes: Sequence[Scope]) -> list[str]:
    return [f"repository:{repo}:{actions}" for repo, actions in scopes]


@dataclass
class _Token:
    value: str
    grants: frozenset[tuple[str, str]]  # (repository, action) pairs
    expires: float


class Authenticator:
    """Produces the Authorization header for a request; thread-safe."""

    def __init__(self, http: urllib3.PoolManager, *, username: str | None, password: str | None,
                 timeout: urllib3.Timeout, count: Callable[[str, str], None],
                 credentials_from: str | None = None) -> None:
        self._http = http
        self._username = username
        self._credentials_from = credentials_from  # where the credentials came from, for error messages
        self._password = password
        self._timeout = timeout
        self._count = count
        self._scheme: str | None = None
        self._realm = ""
        self._service: str | None = None
        self._tokens: list[_Token] = []
        self._lock = threading.Lock()

    @property
    def credential(self) -> str:
        """Which credential requests carry, for error messages; never the secret itself."""
        if self._username is None:
            return "anonymous access"
        return f"user {self._username!r}" + (f" from {self._credentials_from}" if self._credentials_from else "")

    @property
    def _basic(self) -> str:
        pair = f"{self._username or ''}:{self._password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def header(self, scopes: Sequence[Scope]) -> str | None:
        """The Authorization value for `scopes`, fetching a token if needed; None until challenged."""
        if self._scheme == "basic":
            return self._basic if self._username is not None else None
        if self._scheme != "bearer":
            return None
        needed = {(repo, action) for repo, actions in scopes for action in actions.split(",")}
        with self._lock:
            now = time.monotonic()
            self._tokens = [t for t in self._tokens if t.expires > now]
            for token in self._tokens:
                if needed <= token.grants:
                    return f"Bearer {token.value}"
            token = self._fetch(scopes)
            self._tokens.append(token)
            return f"Bearer {token.value}"

    def challenged(self, header: str | None, scopes: Sequence[Scope], sent: str | None) -> bool:
        """Learn from a 401; True when a retry with new credentials may succeed."""
        challenge = parse_challenge(header or "")
        if challenge is None or challenge.scheme not in ("basic", "bearer"):
            return False
        with self._lock:
            if challenge.scheme == "basic":
                retry = self._scheme != "basic" and self._username is not None
                self._scheme = "basic"
                return retry
            self._scheme = "bearer"
            self._realm = challenge.params.get("realm", "")
            self._service = challenge.params.get("service")
            # The token we sent was refused (revoked or expired early): never offer it again.
            if sent:
                self._tokens = [t for t in self._tokens if f"Bearer {t.value}" != sent]
            return bool(self._realm)

    def _fetch(self, scopes: Sequence[Scope]) -> _Token:
        fields: list[tuple[str, str]] = [("scope", s) for s in scope_strings(scopes)]
        if self._service:
            fields.insert(0, ("service", self._service))
        headers = {"Authorization": self._basic} if self._username is not None else {}
        self._count("GET", "token")
        try:
            # `retries=False` would turn redirects off as well; urllib3 drops Authorization when one
            # leaves the realm's host.
            response = self._http.request("GET", self._realm, fields=fields, headers=headers,
                                          timeout=self._timeout, retries=_TOKEN_RETRIES)
        except urllib3.exceptions.HTTPError as err:
            raise RegistryError(f"token endpoint {self._realm}: {err}") from err
        if response.status in (401, 403):
            raise RegistryError(f"token endpoint {self._realm} refused {self.credential} (HTTP {response.status})",
                                response.status)
        if response.status != 200:
            raise RegistryError(f"token endpoint {self._realm} answered HTTP {response.status}", response.status)
        try:
            body = response.json()
            value = body.get("token") or body["access_token"]
            lifetime = float(body.get("expires_in") or _DEFAULT_TOKEN_LIFETIME)
        except (ValueError, KeyError, TypeError) as err:
            raise RegistryError(f"token endpoint {self._realm} sent no token") from err
        grants = frozenset((repo, action) for repo, actions in scopes for action in actions.split(","))
        return _Token(value, grants, time.monotonic() + max(lifetime - _EXPIRY_MARGIN, 1.0))

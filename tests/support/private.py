"""Private upstreams on loopback: a registry behind htpasswd (Basic) or a token issuer (Bearer), one user
whose token lives in a Secrets Manager secret (moto), and a rotation that stores a new token and revokes
the old one at the registry."""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .registry import RegistryServer
from .token_issuer import TokenIssuer

USER = "mirror-bot"

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.13 drops crypt; distribution wants bcrypt
    import crypt


def _bcrypt(password: str) -> str:
    # The lowest cost: distribution checks the hash on every request, and cost 12 makes each take 0.3 s.
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))


@dataclass
class PrivateRegistry:
    """A registry only USER may read, and the secret holding USER's token."""

    kind: str  # "basic" or "bearer"
    server: RegistryServer
    secret: str
    token: str
    secretsmanager: Any  # boto3 client (moto)
    _revoke: Callable[[str], None]

    @property
    def host(self) -> str:
        return self.server.host

    def rotate(self) -> str:
        """Store a new token in the secret, then revoke the old one at the registry; returns the new one."""
        self.token = secrets.token_urlsafe(24)
        self.secretsmanager.put_secret_value(SecretId=self.secret, SecretString=secret_value(self.token))
        self._revoke(self.token)
        return self.token


def secret_value(token: str, username: str = USER) -> str:
    return json.dumps({"username": username, "accessToken": token})


def basic_registry(start: Callable[..., RegistryServer], root: Path, secretsmanager: Any) -> PrivateRegistry:
    htpasswd = root / f"htpasswd-{uuid.uuid4().hex[:8]}"

    def allow(token: str) -> None:
        previous = htpasswd.stat().st_mtime_ns if htpasswd.exists() else 0
        htpasswd.write_text(f"{USER}:{_bcrypt(token)}\n")
        # distribution reloads the file when its mtime changes: make sure it does, however coarse the clock.
        stamp = max(time.time_ns(), previous + 10**9)
        os.utime(htpasswd, ns=(stamp, stamp))

    token = secrets.token_urlsafe(24)  # drawn per run: no credential literal in the source
    allow(token)
    server = start("basic", auth={"htpasswd": {"realm": "private", "path": str(htpasswd)}})
    return _registered("basic", server, token, secretsmanager, allow)


def bearer_registry(start: Callable[..., RegistryServer], issuer: TokenIssuer, secretsmanager: Any) -> PrivateRegistry:
    """`issuer` must refuse anonymous callers (TokenIssuer(anonymous=False)): else anyone may pull."""
    token = secrets.token_urlsafe(24)
    issuer.users = {USER: token}

    def allow(new: str) -> None:
        issuer.users = {USER: new}

    server = start("bearer", auth=issuer.registry_auth())
    return _registered("bearer", server, token, secretsmanager, allow)


def _registered(kind: str, server: RegistryServer, token: str, secretsmanager: Any,
                allow: Callable[[str], None]) -> PrivateRegistry:
    name = f"team/{kind}-{uuid.uuid4().hex[:8]}"  # moto keeps secrets for the whole session
    secretsmanager.create_secret(Name=name, SecretString=secret_value(token))
    return PrivateRegistry(kind, server, name, token, secretsmanager, allow)

"""Real registry clients for `Endpoints`: the account's ECR (or any destination host) and each source registry,
logged in with the credentials its Secrets Manager secret holds."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ecr_mirror_cdk.reference import api_host

from ..oci.endpoints import Endpoints
from ..oci.errors import CredentialsError


class _Sources:
    """Source registry clients; a registry with a secret gets a client that follows the secret.

    Every use reads the secret again through `read`, which Powertools answers from its cache until
    `max_age`, so a new token reaches a warm Lambda within `max_age`. A changed credential gets a new
    client: its new Authenticator drops the bearer tokens the old credential earned. Clients are told
    apart by a sha256 of the token, never the token itself. A secret that cannot be read fails that
    registry's images only, and is not asked again until `max_age` has passed.
    """

    def __init__(self, *, host: Callable[[str], str], anonymous: Callable[[str], Any],
                 credentialed: Callable[[str, tuple[str, str], str], Any], secrets: Mapping[str, str],
                 read: Callable[[str, str], tuple[str, str] | None], max_age: float) -> None:
        self._host, self._anonymous, self._credentialed = host, anonymous, credentialed
        self._secrets = dict(secrets)
        self._read = read
        self._max_age = max_age
        self._clients: dict[str, tuple[tuple[str, str] | None, Any]] = {}  # registry -> (fingerprint, client)
        self._failed: dict[str, tuple[str, float]] = {}  # registry -> (reason, when to ask again)
        self._lock = threading.Lock()

    def __call__(self, registry: str) -> Any:
        secret = self._secrets.get(registry)
        if secret is None:
            return self._anonymous(self._host(registry))
        with self._lock:
            reason, retry_at = self._failed.get(registry, ("", 0.0))
        if time.monotonic() < retry_at:
            raise CredentialsError(reason)
        try:
            credentials = self._read(secret, registry)
        except CredentialsError as err:
            with self._lock:
                self._failed[registry] = (str(err), time.monotonic() + self._max_age)
            raise
        fingerprint = (credentials[0], hashlib.sha256(credentials[1].encode()).hexdigest()) if credentials else None
        with self._lock:
            self._failed.pop(registry, None)
            current = self._clients.get(registry)
            if current is None or current[0] != fingerprint:
                # The old client is left to copies still using it; nothing new is handed it.
                client = (self._credentialed(self._host(registry), credentials, f"secret {secret}") if credentials
                          else self._anonymous(self._host(registry)))
                current = self._clients[registry] = (fingerprint, client)
            return current[1]


def connect(destination: str | None = None, *, upstreams: Mapping[str, str] | None = None,
            credentials: Mapping[str, str] | None = None,
            ecr: Any = None, secrets: Any = None, secret_max_age: int | None = None, pool_size: int = 16,
            max_retry_wait: float = 0.0) -> Endpoints:
    """Real clients. `destination` None means the caller's ECR (`ecr`: a boto3 client for the login).

    `upstreams` overrides where a source registry is reached (`docker.io` -> `127.0.0.1:5001`);
    `credentials` maps a source registry, as image references name it, to the Secrets Manager secret
    it is logged in to with (`Config.credential_secrets()`), read through `secrets` (a Powertools
    provider; None: the default one) and re-read after `secret_max_age` (default `ecr.SECRET_MAX_AGE`).
    `max_retry_wait` 0:
    a 429 raises at once, whatever its Retry-After, so the caller defers instead of sleeping.
    """
    from ..oci.registry import RegistryClient
    from . import ecr as ecr_adapter

    options: dict[str, Any] = {"pool_size": pool_size, "max_retry_wait": max_retry_wait}
    clients: dict[str, RegistryClient] = {}
    lock = threading.Lock()

    def client(host: str) -> RegistryClient:
        """One anonymous client per host, shared by the destination and anonymous sources."""
        with lock:
            if host not in clients:
                clients[host] = RegistryClient(host, **options)
            return clients[host]

    def credentialed(host: str, login: tuple[str, str], origin: str) -> RegistryClient:
        return RegistryClient(host, username=login[0], password=login[1], credentials_from=origin, **options)

    max_age = ecr_adapter.SECRET_MAX_AGE if secret_max_age is None else secret_max_age

    def read(secret: str, registry: str) -> tuple[str, str] | None:
        return ecr_adapter.registry_credentials(secret, registry=registry, provider=secrets, max_age=max_age)

    overrides = dict(upstreams or {})
    source = _Sources(host=lambda registry: overrides.get(registry) or api_host(registry), anonymous=client,
                      credentialed=credentialed, secrets=credentials or {}, read=read, max_age=max_age)

    if destination:
        return Endpoints(client(destination), sources=source)
    ecr_registry, login = ecr_adapter.registry_client(ecr, **options)
    # Refresh an hour early: a copy that starts just before expiry must still finish.
    return Endpoints(ecr_registry, sources=source, expires_at=login.expires_at - 3600)

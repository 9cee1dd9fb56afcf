"""Which registry client serves what: the destination, each source registry, each pull-through cache.

Planning, copying, the Lambdas and the CLI all go through one `Endpoints`; tests build it from
in-memory fakes, `connect` builds it from real `RegistryClient`s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .errors import CredentialsError
from .reference import DOCKER_HUB, api_host

if TYPE_CHECKING:
    from .registry import ManifestInfo

# (repository, tag) -> digest the cache holds, found without touching the upstream.
CachedDigest = Callable[[str, str], "str | None"]


class Registry(Protocol):
    """What planning needs of a registry client (RegistryClient, or a test fake)."""

    def head_manifest(self, repository: str, reference: str) -> ManifestInfo | None: ...

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, ManifestInfo]: ...

    def list_tags(self, repository: str) -> list[str]: ...


@dataclass(frozen=True)
class Cache:
    """A pull-through cache that serves one upstream.

    ECR keeps the rule's prefix in the repository name (`docker-hub/library/python`) on the
    destination registry itself; a stand-alone proxy (distribution in proxy mode) serves the
    upstream's own paths. `cached_digest` tells what the cache holds without making it fetch from
    its upstream (ECR: DescribeImages); None means the cache cannot be asked at planning time, so
    every run warms it (cheap when warm: the cache answers from its store and the upstream sees
    only tag HEADs).
    """

    client: Any
    keeps_prefix: bool
    cached_digest: CachedDigest | None = None
    # A stand-alone proxy answers blob HEADs from its upstream, so "has it" proves nothing there.
    trusts_blob_heads: bool = True
    # ECR fetches every manifest an index lists when it fetches the index, whatever we then pull;
    # distribution's proxy fetches only the manifests asked for.
    fetches_whole_index: bool = True

    def repository(self, prefix: str, source_repository: str) -> str:
        return f"{prefix}/{source_repository}" if self.keeps_prefix else source_repository

    def tag_digest(self, repository: str, tag: str) -> str | None:
        """The digest the cache's tag points at now. `cached_digest` when it has one; else a HEAD,
        which a cache may answer after checking its upstream: ask only once the digest you expect
        is stored, so that check costs no upstream pull."""
        if self.cached_digest is not None:
            return self.cached_digest(repository, tag)
        info = self.client.head_manifest(repository, tag)
        return str(info.digest) if info is not None else None


def parse_cache(prefix: str, value: str) -> tuple[str, bool]:
    """`HOST[:PORT]` (a proxy serving the upstream's paths) or `HOST[:PORT]/PREFIX` (a registry
    laid out like ECR, the rule's repositories under PREFIX/) -> (host, keeps_prefix)."""
    host, _, path = value.partition("/")
    if path and path.strip("/") != prefix:
        raise ValueError(f"cache {prefix}={value}: the path after the host must be the prefix {prefix!r}")
    return host, bool(path)


class Endpoints:
    def __init__(self, destination: Any, *, sources: Callable[[str], Any],
                 caches: Mapping[str, Cache] | None = None, any_cache: Cache | None = None,
                 expires_at: float | None = None) -> None:
        self.destination = destination
        self._sources = sources
        self._caches = dict(caches or {})
        self._any_cache = any_cache  # ECR: every rule's prefix lives in the destination registry
        self.expires_at = expires_at  # when the destination's credentials (ECR token) run out

    def source(self, registry: str) -> Any:
        """Client for a source registry, named as image references name it (`docker.io`)."""
        return self._sources(registry)

    def cache(self, prefix: str) -> Cache | None:
        return self._caches.get(prefix, self._any_cache)

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and time.time() >= self.expires_at


def connect(destination: str | None = None, *, upstreams: Mapping[str, str] | None = None,
            caches: Mapping[str, str] | None = None, docker_hub_secret: str | None = None,
            ecr: Any = None, secrets: Any = None, pool_size: int = 16, max_retry_wait: float = 0.0) -> Endpoints:
    """Real clients. `destination` None means the caller's ECR, whose PTC rules are the caches.

    `upstreams` overrides where a source registry is reached (`docker.io` -> `127.0.0.1:5001`);
    `caches` maps a PTC prefix to a stand-alone pull-through cache registry (`parse_cache`: the
    upstream's paths, or `HOST/PREFIX` for ECR's layout, whose tags the copier moves itself, see
    `copy.refresh_through_cache`). `max_retry_wait` 0:
    a 429 raises at once, whatever its Retry-After, so the caller defers instead of sleeping.
    """
    from . import ecr as ecr_adapter
    from .registry import RegistryClient

    clients: dict[tuple[str, str | None], RegistryClient] = {}
    lock = threading.Lock()

    def client(host: str, credentials: tuple[str, str] | None = None, origin: str | None = None) -> RegistryClient:
        key = (host, credentials[0] if credentials else None)
        with lock:
            if key not in clients:
                username, password = credentials or (None, None)
                clients[key] = RegistryClient(host, username=username, password=password, pool_size=pool_size,
                                              max_retry_wait=max_retry_wait, credentials_from=origin)
            return clients[key]

    overrides = dict(upstreams or {})
    sources: dict[str, RegistryClient | CredentialsError] = {}

    def source(registry: str) -> RegistryClient:
        """Credentials are read once per source registry and endpoints (a warm Lambda keeps both); when
        they cannot be read, that registry's images fail with the reason and the others go on."""
        if registry not in sources:
            host = overrides.get(registry) or api_host(registry)
            try:
                credentials = None
                if registry == DOCKER_HUB and docker_hub_secret:
                    credentials = ecr_adapter.docker_hub_credentials(docker_hub_secret, provider=secrets)
                sources[registry] = client(host, credentials, f"secret {docker_hub_secret}")
            except CredentialsError as err:
                sources[registry] = err
        found = sources[registry]
        if isinstance(found, CredentialsError):
            raise CredentialsError(str(found))
        return found

    cache_map = {}
    for prefix, value in (caches or {}).items():
        host, keeps_prefix = parse_cache(prefix, value)
        # ECR's layout means ECR's behaviour: stored blobs answer HEADs, an index arrives whole.
        cache_map[prefix] = Cache(client(host), keeps_prefix=keeps_prefix, trusts_blob_heads=keeps_prefix,
                                  fetches_whole_index=keeps_prefix)
    if destination:
        return Endpoints(client(destination), sources=source, caches=cache_map)
    ecr = ecr_adapter.ecr_client(ecr)  # one boto3 client for the login and DescribeImages
    ecr_registry, login = ecr_adapter.registry_client(ecr, pool_size=pool_size, max_retry_wait=max_retry_wait)
    in_ecr = Cache(ecr_registry, keeps_prefix=True, cached_digest=ecr_adapter.cached_digest_reader(ecr))
    # Refresh an hour early: a copy that starts just before expiry must still finish.
    return Endpoints(ecr_registry, sources=source, caches=cache_map, any_cache=in_ecr,
                     expires_at=login.expires_at - 3600)

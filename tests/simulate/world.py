"""The loopback servers one simulated mode runs against, started and stopped together.

- "Docker Hub": a docker-registry holding the fleet's images, behind the rate limiter.
- "ECR": tests/support/ptc.py, one registry as an ECR registry is one: the mirror's direct copies
  (`mirror/docker.io/library/python`, what the copier writes for every image mirror.yaml lists) as
  its own repositories, and the Docker Hub pull-through cache rule's repositories under `docker-hub/`
  for what mirror.yaml does not list. The cache behaves as ECR documents: a cached tag is checked
  upstream at most once per `PTC_REFRESH` seconds, a digest it lacks is fetched with every manifest
  its index lists; it pulls from the limiter with the mirror's Docker Hub account, as the rule does
  with its Secrets Manager credentials.
- the build host's endpoint: ecr_mirror_cdk/setup/endpoint.py's own request handler on loopback, given the
  MIRROR_MAP the stack writes (ecr_mirror_cdk/contract.py `mirror_map`). It answers a Docker Hub path from
  the direct copy (`mirror/docker.io/<path>`) first, then the cache prefix, and journals every
  manifest request.
"""

from __future__ import annotations

import http.server
import json
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
import yaml

from ecr_mirror_cdk import contract
from ecr_mirror_cdk.config import Config
from ecr_mirror_cdk.config_parse import parse_config
from ecr_mirror_cdk.setup.ecr import Registry
from ecr_mirror_cdk.setup.endpoint import Journal, handler
from ecr_mirror_cdk.setup.mirror_map import MirrorMap
from lambdas.mirror.oci.copy import recorded_source_digest
from lambdas.mirror.oci.registry import RegistryClient
from tests.support.images import push_image
from tests.support.limiter import SIX_HOURS, Limiter, ManualClock, Policy
from tests.support.ptc import PullThroughCache
from tests.support.registry import RegistryServer

from .fleet import MIRRORED_PLATFORMS, UNLISTED, Bump, Day, Image

MIRROR_USER = "ecr-mirror"
PTC_PREFIX = "docker-hub"
PTC_REFRESH = 24 * 3600.0  # ECR: "checks the remote repository up to once per 24 hours"
_ATTESTATION = "attestation-manifest"  # BuildKit's vnd.docker.reference.type of an attestation manifest
_ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"))


def staging_tag(bump: Bump) -> str:
    """Where a bump's content waits, pushed before the day; the bump itself only moves the tag."""
    return f"{bump.image.tag}--next{bump.seed}"


@contextmanager
def seeded(day: Day) -> Iterator[Path]:
    """A registry storage directory holding the day's images, and each bump's content under its
    staging tag: every mode starts from a copy (pushing once keeps the modes' starting points equal)."""
    with tempfile.TemporaryDirectory(prefix="simulate-seed-") as root, \
            RegistryServer(Path(root), name="seed") as registry:
        for image in day.images:
            _push(registry.host, image, image.tag, image.seed)
        for bump in day.bumps:
            _push(registry.host, bump.image, staging_tag(bump), bump.seed)
        registry.stop()
        yield Path(root) / "seed-data"


def _push(host: str, image: Image, tag: str, seed: int) -> str:
    return push_image(host, image.repository, tag, kind=image.kind, platforms=image.platforms, layers=2,
                      layer_size=image.layer_size, attestations=image.attestations, seed=seed)


@dataclass
class Hub:
    """The rate-limited "Docker Hub"; bumps go to the registry behind the limiter, uncounted."""

    registry: RegistryServer
    limiter: Limiter

    def bump(self, bump: Bump) -> None:
        """Point the tag at the new content: what an upstream rebuild of `python:3.12-slim` looks like."""
        http = urllib3.PoolManager(retries=False)
        base = f"{self.registry.url}/v2/{bump.image.repository}/manifests"
        staged = http.request("GET", f"{base}/{staging_tag(bump)}", headers={"Accept": _ACCEPT})
        moved = http.request("PUT", f"{base}/{bump.image.tag}", body=staged.data,
                             headers={"Content-Type": staged.headers["Content-Type"]})
        if staged.status != 200 or moved.status != 201:
            raise RuntimeError(f"bump of {bump.image.name}: HTTP {staged.status}, {moved.status}")

    def manifests_of(self, image: Image) -> tuple[str, set[str]]:
        """What a direct copy of the tag as it is now fetches: its top manifest and, for an index, the
        manifests of the mirrored platforms and the attestation manifests that describe them. Read
        from the registry behind the limiter, so it costs no pull. Returns (top digest, all)."""
        http = urllib3.PoolManager(retries=False)
        url = f"{self.registry.url}/v2/{image.repository}/manifests/{image.tag}"
        response = http.request("GET", url, headers={"Accept": _ACCEPT})
        digest = response.headers["Docker-Content-Digest"]
        if not image.multi_platform:
            return digest, {digest}
        entries = response.json()["manifests"]
        kept = {e["digest"] for e in entries if _platform(e) in MIRRORED_PLATFORMS}
        described = {e["digest"] for e in entries if (e.get("annotations") or {}).get(
            "vnd.docker.reference.type") == _ATTESTATION and e["annotations"]["vnd.docker.reference.digest"] in kept}
        return digest, {digest, *kept, *described}


def _platform(entry: dict[str, Any]) -> str:
    platform = entry.get("platform") or {}
    return f"{platform.get('os')}/{platform.get('architecture')}"


def mirror_config(images: list[Image], schedule: str) -> Config:
    """The simulation's mirror.yaml: every image the fleet uses but `fleet.UNLISTED`, and the Docker Hub
    cache rule that serves those."""
    grouped: dict[str, list[str]] = {}
    for image in images:
        if image.name not in UNLISTED:
            grouped.setdefault(image.repository.removeprefix("library/"), []).append(image.tag)
    document: dict[str, Any] = {
        "images": [
            {"source": source, "tags": tags,
             **({"platforms": list(MIRRORED_PLATFORMS)} if _multi(images, source) else {})}
            for source, tags in grouped.items()
        ],
        "schedule": schedule,
        "pull_through_cache": [{"upstream": "docker-hub", "prefix": PTC_PREFIX}],
    }
    return parse_config(yaml.safe_load(yaml.safe_dump(document)), origin="simulation mirror.yaml")


def _multi(images: list[Image], source: str) -> bool:
    return any(i.multi_platform for i in images if i.repository.removeprefix("library/") == source)


def mirror_map(config: Config) -> MirrorMap:
    """The build host's view of the mirror: MIRROR_MAP as the stack writes it, parsed as the setup
    parses `--map`."""
    return MirrorMap.parse(contract.mirror_map(config))


class Endpoint:
    """The setup's endpoint handler on loopback, in front of "ECR", as the buildspec starts it."""

    def __init__(self, registry: str, mirror: MirrorMap, journal: Path) -> None:
        self.journal = journal
        served = handler(Registry(registry), mirror, Journal(journal))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), served)
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Endpoint:
        threading.Thread(target=self._server.serve_forever, name="endpoint", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def entries(self) -> list[dict[str, Any]]:
        """The journal: one entry per manifest request, served (from which repository) or not."""
        if not self.journal.exists():
            return []
        return [json.loads(line) for line in self.journal.read_text().splitlines()]

    def served(self) -> Counter[str]:
        """Manifest requests by where they were answered: "direct", "cache" or "fell back"."""
        return Counter("fell back" if not e["served"] else "cache" if _cached(e) else "direct" for e in self.entries())

    def cached_images(self) -> set[str]:
        """Images (`acme/build-tools:2024.11`) whose tag the endpoint answered from the cache rule."""
        return {f"{e['image'].removeprefix('library/')}:{e['reference']}" for e in self.entries()
                if e["served"] and _cached(e) and not e["reference"].startswith("sha256:")}


def _cached(entry: dict[str, Any]) -> bool:
    return str(entry.get("repository", "")).startswith(f"{PTC_PREFIX}/")


@dataclass
class Mirror:
    ecr: PullThroughCache  # "ECR": direct copies under mirror/, the Docker Hub rule's repositories under docker-hub/
    endpoint: Endpoint
    config: Config
    password: str

    def __post_init__(self) -> None:
        self._storage = RegistryClient(self.ecr.storage.host)  # read without triggering a cache check
        self._direct = {f"{i.ref.repository}:{tag}": i for i in self.config.images for tag in i.tags}

    def serving(self, image: Image) -> tuple[str | None, str | None]:
        """(digest a build pulling the tag gets now, the Docker Hub digest that is a copy of), where the
        endpoint looks first: the direct copy when mirror.yaml lists the image, else the cache's tag."""
        listed = self._direct.get(f"{image.repository}:{image.tag}")
        repository = listed.repository if listed else f"{PTC_PREFIX}/{image.repository}"
        info = self._storage.head_manifest(repository, image.tag)
        if info is None or listed is None:
            return (info.digest, info.digest) if info else (None, None)
        return info.digest, recorded_source_digest(self._storage, repository, image.tag,
                                                   platforms=listed.platforms or None)


class World:
    """Everything one mode needs; `with World(...) as world:` stops every server on the way out.

    `mirror`: the simulated mirror.yaml, for the mirrored mode; None without the mirror."""

    def __init__(self, clock: ManualClock, template: Path, *, policy: Policy = SIX_HOURS,
                 users: dict[str, str] | None = None, mirror: Config | None = None) -> None:
        self.clock = clock
        self.template = template
        self.policy = policy
        self.users = dict(users or {})
        self.config = mirror
        self._stack = ExitStack()
        self.hub: Hub
        self.mirror: Mirror | None = None

    def __enter__(self) -> World:
        try:
            root = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="simulate-")))
            registry = RegistryServer(root, name="hub")
            shutil.copytree(self.template, root / "hub-data")
            self._stack.enter_context(registry)
            mirror_password = "dckr_pat_mirror"  # noqa: S105 - a loopback test account
            users = {**self.users, **({MIRROR_USER: mirror_password} if self.config else {})}
            limiter = Limiter(registry.host, users=users, policy=self.policy, clock=self.clock)
            self._stack.enter_context(limiter)
            self.hub = Hub(registry, limiter)
            if self.config is not None:
                ecr = self._stack.enter_context(PullThroughCache(
                    root, limiter.host, prefix=PTC_PREFIX, refresh_interval=PTC_REFRESH, clock=self.clock,
                    username=MIRROR_USER, password=mirror_password, own_repositories=True))
                endpoint = self._stack.enter_context(Endpoint(ecr.host, mirror_map(self.config),
                                                              root / "endpoint.requests"))
                self.mirror = Mirror(ecr, endpoint, self.config, mirror_password)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

"""The loopback servers one simulated mode runs against, started and stopped together.

- "Docker Hub": a docker-registry holding the fleet's images, behind the rate limiter.
- "ECR": tests/support/ptc.py, which behaves as ECR's Docker Hub pull-through cache does: its
  repositories keep the rule's prefix (`docker-hub/library/python`), it checks a cached tag upstream
  at most once per `PTC_REFRESH` seconds, fetches a digest it lacks (an index with every manifest it
  lists) and accepts the mirror's tag moves. It pulls from the limiter with the mirror's Docker Hub
  account, as the PTC rule does with its Secrets Manager credentials. The simulated mirror.yaml
  routes every image through that rule, so it is the only "ECR" repository host needed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
import yaml

from lambdas.mirror.config import Config, parse_config
from lambdas.mirror.registry import RegistryClient
from tests.simulate.dockerfile import MirrorMap
from tests.support.images import push_image
from tests.support.limiter import SIX_HOURS, Limiter, ManualClock, Policy
from tests.support.ptc import PullThroughCache
from tests.support.registry import RegistryServer

from .fleet import MIRRORED_PLATFORMS, Bump, Day, Image

MIRROR_USER = "ecr-mirror"
PTC_PREFIX = "docker-hub"
PTC_REFRESH = 24 * 3600.0  # ECR: "checks the remote repository up to once per 24 hours"
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
        """What the cache fetches for the tag as it is now: its top manifest and, for an index,
        every manifest the index lists (ECR fetches them all with the index, whatever platforms the
        mirror keeps). Read from the registry behind the limiter, so it costs no pull.
        Returns (top digest, all)."""
        http = urllib3.PoolManager(retries=False)
        url = f"{self.registry.url}/v2/{image.repository}/manifests/{image.tag}"
        response = http.request("GET", url, headers={"Accept": _ACCEPT})
        digest = response.headers["Docker-Content-Digest"]
        if not image.multi_platform:
            return digest, {digest}
        return digest, {digest, *(e["digest"] for e in response.json()["manifests"])}


def mirror_config(images: list[Image], schedule: str) -> Config:
    """The simulation's mirror.yaml: the fleet's images through the Docker Hub PTC rule."""
    grouped: dict[str, list[str]] = {}
    for image in images:
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


def mirror_map(config: Config, registry: str) -> MirrorMap:
    """The redirect module's view of the mirror, built as the stack builds MIRROR_MAP (stacks/build.py)."""
    prefixes = {rule.registry: rule.prefix for rule in config.pull_through_cache}
    repositories = {
        image.ref.name: {"repository": image.repository, "tags": list(image.tags), "tag_regex": image.tag_regex}
        for image in config.images if image.via is None
    }
    return MirrorMap.from_json(registry, json.dumps({"prefixes": prefixes, "repositories": repositories}))


@dataclass
class Mirror:
    cache: PullThroughCache  # "ECR", with the Docker Hub rule's repositories under docker-hub/
    password: str

    def __post_init__(self) -> None:
        self._storage = RegistryClient(self.cache.storage.host)

    def described_digest(self, repository: str, tag: str) -> str | None:
        """The digest the cache's tag names, as ECR's DescribeImages reports it: read from the
        stand-in's storage, so it never makes the cache check its upstream."""
        info = self._storage.head_manifest(repository, tag)
        return info.digest if info is not None else None


class World:
    """Everything one mode needs; `with World(...) as world:` stops every server on the way out."""

    def __init__(self, clock: ManualClock, template: Path, *, policy: Policy = SIX_HOURS,
                 users: dict[str, str] | None = None, mirror: bool = False) -> None:
        self.clock = clock
        self.template = template
        self.policy = policy
        self.users = dict(users or {})
        self.with_mirror = mirror
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
            users = {**self.users, **({MIRROR_USER: mirror_password} if self.with_mirror else {})}
            limiter = Limiter(registry.host, users=users, policy=self.policy, clock=self.clock)
            self._stack.enter_context(limiter)
            self.hub = Hub(registry, limiter)
            if self.with_mirror:
                cache = PullThroughCache(root, limiter.host, prefix=PTC_PREFIX, refresh_interval=PTC_REFRESH,
                                         clock=self.clock, username=MIRROR_USER, password=mirror_password)
                self.mirror = Mirror(self._stack.enter_context(cache), mirror_password)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

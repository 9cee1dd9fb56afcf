"""The mirror map (`--map`, $MIRROR_MAP): which upstream registries the mirror holds, under which ECR repositories
a requested image is looked for, in order, and which requests are refused before anything is asked upstream."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .base import SetupError, load_json

DOCKER_HUB = "docker.io"
# The stack's default cache rules, for a run by hand without --map.
DEFAULT_MAP = {"prefixes": {"docker.io": "docker-hub", "public.ecr.aws": "ecr-public", "quay.io": "quay",
                            "registry.k8s.io": "k8s"}}
HOST = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?\.)*[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
                  r"(?::[0-9]{1,5})?")
# ECR repository names (ECR API reference, CreateRepository repositoryName): the map's prefixes and targets.
_REPOSITORY = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*")
# What a client may ask for (OCI distribution spec, "Pulling manifests": <name>, <reference>).
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


@dataclass(frozen=True)
class MirrorMap:
    """Upstream registry -> cache-rule prefix; `registry/path` -> a repository copied directly; and hosts whose
    listed images are copied to `<mirror_prefix>/<host>/<path>` (ecr_mirror_cdk/contract.py mirror_map writes it)."""

    prefixes: dict[str, str]
    repositories: dict[str, str] = field(default_factory=dict)
    mirror_prefix: str = ""
    mirror_hosts: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> MirrorMap:
        try:
            data = load_json(text)
        except ValueError as err:
            raise SetupError(f"--map is not JSON: {err}") from None
        if not isinstance(data, dict) or set(data) - {"prefixes", "repositories", "mirror_prefix", "mirror_hosts"}:
            raise SetupError('--map must be a JSON object with "prefixes", and optionally "repositories", '
                             '"mirror_prefix" and "mirror_hosts"')
        prefixes, repositories = data.get("prefixes", {}), data.get("repositories", {})
        if not isinstance(prefixes, dict) or not isinstance(repositories, dict):
            raise SetupError('--map: "prefixes" and "repositories" must be JSON objects')
        for registry, prefix in prefixes.items():
            if not HOST.fullmatch(registry) or not isinstance(prefix, str) or not _REPOSITORY.fullmatch(prefix):
                raise SetupError(f"--map: prefixes: {registry!r}: {prefix!r} is not a registry host and ECR prefix")
        base, hosts = data.get("mirror_prefix", ""), data.get("mirror_hosts", [])
        if not isinstance(hosts, list) or not all(isinstance(h, str) and HOST.fullmatch(h) for h in hosts) or (
                hosts and not (isinstance(base, str) and _REPOSITORY.fullmatch(base))):
            raise SetupError('--map: "mirror_hosts" must list registry hosts, and "mirror_prefix" be an ECR prefix')
        return cls(dict(prefixes), direct_copies(repositories), base if hosts else "", tuple(hosts))

    def upstreams(self) -> list[str]:
        hosts = set(self.prefixes) | set(self.mirror_hosts) | {source.split("/", 1)[0] for source in self.repositories}
        return sorted(hosts, key=lambda h: (h != DOCKER_HUB, h))

    def route(self, name: str) -> tuple[str, str, list[str]]:
        """A requested repository -> (upstream, its path there, mirror repositories to try in order).

        Docker Hub names come as they are (`library/python`, as dockerd and BuildKit send them); other
        upstreams under their host (`quay.io/org/app`). A Docker Hub namespace never holds a dot, so the two
        cannot be confused. The caller has checked `name` against the OCI name grammar.
        """
        first, _, rest = name.partition("/")
        upstream, path = (first, rest) if rest and "." in first else (DOCKER_HUB, name)
        if upstream == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        candidates = []
        if f"{upstream}/{path}" in self.repositories:
            candidates.append(self.repositories[f"{upstream}/{path}"])
        if upstream in self.mirror_hosts:
            candidates.append(f"{self.mirror_prefix}/{ecr_host(upstream)}/{path}")
        if upstream in self.prefixes:
            candidates.append(f"{self.prefixes[upstream]}/{path}")
        return upstream, path, candidates

    def ecr_paths(self, upstream: str) -> list[str]:
        """ECR's own paths for an upstream, for BuildKit path mirrors: the direct copies, then the cache prefix."""
        paths = [f"{self.mirror_prefix}/{ecr_host(upstream)}"] if upstream in self.mirror_hosts else []
        return paths + ([self.prefixes[upstream]] if upstream in self.prefixes else [])


def ecr_host(registry: str) -> str:
    """A registry host as the mirror names its repositories: ECR names have no colon, so a port becomes -PORT
    (ecr_mirror_cdk/config.py default_repository)."""
    return registry.lower().strip("[]").replace(":", "-")


def direct_copies(repositories: dict[str, object]) -> dict[str, str]:
    """`--map`'s "repositories", each a source and its ECR repository, checked."""
    direct = {}
    for source, target in repositories.items():
        # The stack once wrote {"repository": ..., "tags": ...}; a plain name is what it writes now.
        name = target.get("repository") if isinstance(target, dict) else target
        host, _, path = source.partition("/")
        if not (HOST.fullmatch(host) and _REPOSITORY.fullmatch(path)) or not (
                isinstance(name, str) and _REPOSITORY.fullmatch(name)):
            raise SetupError(f"--map: repositories: {source!r}: {target!r} is not a source and ECR repository")
        direct[source] = name
    return direct


def refusal(kind: str, name: str, reference: str) -> tuple[int, str, str] | None:
    """Why a request is refused before anything is sent upstream (status, OCI error code, message), or None."""
    if not _NAME.fullmatch(name):
        return 400, "NAME_INVALID", "not a repository name (OCI distribution spec: lowercase components joined by /)"
    if not (_DIGEST.fullmatch(reference) or (kind == "manifests" and _TAG.fullmatch(reference))):
        return 400, "DIGEST_INVALID", f"{reference[:80]!r} is not a {'tag or ' if kind == 'manifests' else ''}digest"
    return None

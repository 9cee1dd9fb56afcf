"""BuildKit's configuration: the buildkitd.toml new buildx builders read, each upstream's mirrors in order.

A path mirror (`127.0.0.1:PORT/quay.io`, `<registry>/quay`) needs BuildKit v0.12.0 or later (moby/buildkit PR 3427).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .base import is_loopback
from .mirror_map import DOCKER_HUB, MirrorMap


def buildkit_config(mirror: MirrorMap, endpoint: str | None, registry: str) -> str:
    """buildkitd.toml: each upstream pulls through the endpoint (if any), then ECR's cache prefix, then upstream."""
    lines = ["# Written by setup_mirror.py: pulls go to the ECR mirror first (through the endpoint, if any).", ""]
    for upstream in mirror.upstreams():
        if not mirrorable(upstream):
            continue  # such registries are not rate limited anyway
        mirrors = [] if endpoint is None else [endpoint if upstream == DOCKER_HUB else f"{endpoint}/{upstream}"]
        mirrors += [f"{registry}/{path}" for path in mirror.ecr_paths(upstream)]
        if mirrors:
            lines += [f'[registry."{upstream}"]', f"  mirrors = {json.dumps(mirrors)}", ""]
    for host in (endpoint, registry):
        if host and is_loopback(host):
            lines += [f'[registry."{host}"]', "  http = true", ""]
    return "\n".join(lines)


def mirrorable(upstream: str) -> bool:
    """Whether BuildKit can name the upstream with a path mirror (a path cannot follow a port)."""
    return ":" not in upstream and upstream != "localhost"


def default_buildkit_config() -> Path:
    """Where buildx (v0.9+, util/confutil DefaultConfigFile) looks for a new builder's buildkitd.toml."""
    if os.environ.get("MIRROR_BUILDKIT_CONFIG"):
        return Path(os.environ["MIRROR_BUILDKIT_CONFIG"])
    docker_config = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    return Path(os.environ.get("BUILDX_CONFIG") or docker_config / "buildx") / "buildkitd.default.toml"

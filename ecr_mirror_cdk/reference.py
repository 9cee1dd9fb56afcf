"""Image references, normalized the way Docker and the distribution spec do it."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
# Docker Hub's registry API lives on another host than its canonical name.
DOCKER_HUB_API = "registry-1.docker.io"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN_RE = re.compile(
    r"(?:localhost|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
)
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")  # the OCI distribution spec's tag grammar
DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")


class ReferenceError(ValueError):
    """An image reference that Docker would not accept."""


@dataclass(frozen=True)
class Reference:
    """A normalized reference: registry host, repository path, and a tag or a digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        if self.digest:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag}" if self.tag else self.name

    @property
    def api_host(self) -> str:
        return api_host(self.registry)

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag=tag)


def api_host(registry: str) -> str:
    """Host that serves the registry API for a registry as references name it (`docker.io`)."""
    return DOCKER_HUB_API if registry == DOCKER_HUB else registry


def parse(text: str, *, default_tag: str | None = None) -> Reference:
    """Parse `text` as Docker does: `python` is `docker.io/library/python`."""
    if not text or text != text.strip():
        raise ReferenceError(f"empty or padded image reference {text!r}")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not DIGEST_RE.fullmatch(digest):
            raise ReferenceError(f"invalid digest {digest!r} in {text!r}")
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not TAG_RE.fullmatch(tag):
            raise ReferenceError(f"invalid tag {tag!r} in {text!r}")
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
        if not _DOMAIN_RE.fullmatch(registry):
            raise ReferenceError(f"invalid registry host {registry!r} in {text!r}")
    else:
        registry, path = DOCKER_HUB, rest
    if registry == "index.docker.io":
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not _PATH_RE.fullmatch(path):
        raise ReferenceError(
            f"invalid repository {path!r} in {text!r} (lowercase letters, digits, and . _ - / separators)"
        )
    if len(registry) + 1 + len(path) > 255:
        raise ReferenceError(f"repository name longer than 255 characters in {text!r}")
    if tag is None and digest is None:
        tag = default_tag
    return Reference(registry, path, tag=tag, digest=digest)


def is_loopback(host: str) -> bool:
    """Loopback registries speak plain HTTP, as Docker allows for them."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def base_url(host: str) -> str:
    return f"{'http' if is_loopback(host) else 'https'}://{host}"

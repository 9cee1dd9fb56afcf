"""In-memory stand-ins for registry clients: enough of the RegistryClient API for planning."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from lambdas.mirror.oci.endpoints import Endpoints
from lambdas.mirror.oci.errors import TooManyRequests

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass(frozen=True)
class Rate:
    limit: int | None
    remaining: int | None
    source: str | None = None


@dataclass(frozen=True)
class Info:
    digest: str
    media_type: str
    size: int
    rate_limit: Rate | None = None


def index(platforms: int, seed: str = "") -> bytes:
    return json.dumps({"mediaType": OCI_INDEX, "manifests": [
        {"digest": f"sha256:{i:064x}", "platform": {"os": "linux", "architecture": f"a{i}"}, "seed": seed}
        for i in range(platforms)]}).encode()


class FakeRegistry:
    """Manifests by (repository, reference); records every call as (method, repository, reference)."""

    def __init__(self, *, remaining: int | None = None, limit: int | None = None, throttle: bool = False) -> None:
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.tags: dict[str, list[str]] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.referrers: dict[tuple[str, str], list[Any]] = {}  # (repository, subject digest) -> descriptors
        self.remaining, self.limit, self.throttle = remaining, limit, throttle

    def put(self, repository: str, tag: str, body: bytes | None = None, media_type: str = OCI_MANIFEST) -> str:
        body = body if body is not None else f"{repository}:{tag}".encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.manifests[(repository, tag)] = self.manifests[(repository, digest)] = (body, media_type)
        self.tags.setdefault(repository, [])
        if tag not in self.tags[repository]:
            self.tags[repository].append(tag)
        return digest

    def _info(self, repository: str, reference: str) -> tuple[bytes, Info] | None:
        if self.throttle:
            raise TooManyRequests("429 Too Many Requests", retry_after=30.0)
        found = self.manifests.get((repository, reference))
        if found is None:
            return None
        body, media_type = found
        rate = Rate(self.limit, self.remaining) if self.remaining is not None else None
        return body, Info("sha256:" + hashlib.sha256(body).hexdigest(), media_type, len(body), rate)

    def head_manifest(self, repository: str, reference: str) -> Info | None:
        self.calls.append(("HEAD", repository, reference))
        found = self._info(repository, reference)
        return found[1] if found else None

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, Info]:
        self.calls.append(("GET", repository, reference))
        found = self._info(repository, reference)
        if found is None:
            raise KeyError(reference)
        return found

    def referrers_index(self, repository: str, digest: str, *, floor: int | None = None) -> list[Any] | None:
        """The referrers API: None (404, no such API) unless `referrers` lists some for the digest."""
        self.calls.append(("REFERRERS", repository, digest))
        return self.referrers.get((repository, digest))

    def list_tags(self, repository: str) -> list[str]:
        self.calls.append(("LIST", repository, ""))
        if self.throttle:
            raise TooManyRequests("429 Too Many Requests", retry_after=30.0)
        return list(self.tags.get(repository, []))

    def gets(self) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[0] == "GET"]


def endpoints(destination: FakeRegistry, sources: dict[str, FakeRegistry], **kwargs: Any) -> Endpoints:
    return Endpoints(destination, sources=sources.__getitem__, **kwargs)


def no_record(*_: object, **__: object) -> None:
    return None

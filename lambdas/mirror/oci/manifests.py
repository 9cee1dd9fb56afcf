"""Manifest parsing and platform selection; pure functions over bytes, no network.

Kinds: Docker v2 schema 2 and manifest list, OCI image manifest and index, OCI artifact manifest.
buildx attestation manifests are OCI image manifests listed in an index with platform
unknown/unknown and the annotations `vnd.docker.reference.type: attestation-manifest` and
`vnd.docker.reference.digest: <the platform manifest they describe>`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ManifestError, NoMatchingPlatform

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_ARTIFACT = "application/vnd.oci.artifact.manifest.v1+json"
INDEX_TYPES = frozenset({DOCKER_LIST, OCI_INDEX})
IMAGE_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST, OCI_ARTIFACT})

REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"
ATTESTATION = "attestation-manifest"
# Written into an index the platform filter rewrote: where it came from and what was kept.
# Digests end up in URL paths: accept only well-formed ones of the algorithms registries use.
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
SOURCE_DIGEST_ANNOTATION = "io.github.ecr-mirror.source-digest"
# Layers served from elsewhere (`urls`) that registries need not hold: Docker's foreign layers
# (`...image.rootfs.foreign.diff.tar...`) and OCI's non-distributable ones
# (`application/vnd.oci.image.layer.nondistributable.v1.tar...`, image-spec layer.md).
_FOREIGN_KINDS = (".foreign.", ".nondistributable.")
PLATFORMS_ANNOTATION = "io.github.ecr-mirror.platforms"


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: str | None = None  # "os/arch" or "os/arch/variant"
    annotations: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    foreign: bool = False  # a layer served from elsewhere (`urls`), which registries do not hold
    raw: dict[str, Any] = field(default_factory=dict, hash=False, compare=False, repr=False)

    @property
    def is_attestation(self) -> bool:
        return self.annotations.get(REFERENCE_TYPE) == ATTESTATION


@dataclass(frozen=True)
class Manifest:
    body: bytes
    digest: str
    media_type: str
    children: tuple[Descriptor, ...] = ()  # manifests an index lists
    blobs: tuple[Descriptor, ...] = ()  # config and layers of an image or artifact
    annotations: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def parse_descriptor(raw: Any, where: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: descriptor is not an object")
    try:
        digest, size, media_type = raw["digest"], raw["size"], raw.get("mediaType", "")
    except KeyError as err:
        raise ManifestError(f"{where}: descriptor without {err.args[0]}") from None
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest) or not isinstance(size, int) or size < 0:
        raise ManifestError(f"{where}: bad digest or size in descriptor {raw!r:.200}")
    platform = raw.get("platform")
    text = None
    if isinstance(platform, dict):
        text = f"{platform.get('os', '')}/{platform.get('architecture', '')}"
        if platform.get("variant"):
            text += f"/{platform['variant']}"
    annotations = raw.get("annotations") if isinstance(raw.get("annotations"), dict) else {}
    foreign = bool(raw.get("urls")) and any(kind in str(media_type) for kind in _FOREIGN_KINDS)
    return Descriptor(str(media_type), digest, size, text, dict(annotations or {}), foreign, raw)


def parse_manifest(body: bytes, content_type: str, digest: str) -> Manifest:
    """Parse any supported manifest; the media type is the document's own, else the served one."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise ManifestError(f"manifest {digest} is not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"manifest {digest} is not a JSON object")
    if doc.get("schemaVersion") == 1:
        raise ManifestError(f"manifest {digest}: Docker schema 1 is not supported")
    media_type = doc.get("mediaType") or content_type
    if media_type not in INDEX_TYPES | IMAGE_TYPES:
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST if "config" in doc else media_type
    annotations = doc.get("annotations") if isinstance(doc.get("annotations"), dict) else {}
    if media_type in INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise ManifestError(f"index {digest} has no 'manifests' list")
        children = tuple(parse_descriptor(e, f"index {digest}") for e in entries)
        return Manifest(body, digest, media_type, children=children, annotations=dict(annotations or {}))
    if media_type == OCI_ARTIFACT:
        raw_blobs = doc.get("blobs") or []
    elif media_type in IMAGE_TYPES:
        if not isinstance(doc.get("config"), dict) or not isinstance(doc.get("layers", []), list):
            raise ManifestError(f"manifest {digest} lacks a config or layers")
        raw_blobs = [doc["config"], *doc.get("layers", [])]
    else:
        raise ManifestError(f"manifest {digest}: unsupported media type {media_type!r}")
    if not isinstance(raw_blobs, list):
        raise ManifestError(f"manifest {digest}: blobs is not a list")
    blobs = tuple(parse_descriptor(b, f"manifest {digest}") for b in raw_blobs)
    return Manifest(body, digest, media_type, blobs=blobs, annotations=dict(annotations or {}))


def platform_matches(platform: str | None, wanted: str) -> bool:
    """`linux/arm64` matches any arm64 variant; `linux/arm/v7` only v7."""
    if not platform:
        return False
    have, want = platform.split("/"), wanted.split("/")
    return have[:2] == want[:2] and (len(want) < 3 or (len(have) > 2 and have[2] == want[2]))


def select(index: Manifest, platforms: Sequence[str]) -> tuple[Descriptor, ...]:
    """The index entries a platform filter keeps: matching platforms, plus attestations of those."""
    if not platforms:
        return index.children
    kept = {c.digest for c in index.children
            if not c.is_attestation and any(platform_matches(c.platform, p) for p in platforms)}
    if not kept:
        have = sorted({c.platform or "?" for c in index.children if not c.is_attestation})
        raise NoMatchingPlatform(f"index {index.digest} has none of {', '.join(platforms)} (it has {', '.join(have)})")
    return tuple(c for c in index.children
                 if c.digest in kept or (c.is_attestation and c.annotations.get(REFERENCE_DIGEST) in kept))


def platform_label(platforms: Sequence[str]) -> str:
    return ",".join(sorted(set(platforms)))


def rewrite_index(index: Manifest, kept: Sequence[Descriptor], platforms: Sequence[str]) -> bytes:
    """The index with only `kept` entries, annotated with the source digest and the filter.

    Deterministic (same source and filter give the same bytes), so an unchanged re-sync produces
    the same destination digest.
    """
    doc = json.loads(index.body)
    doc["manifests"] = [d.raw for d in kept]
    annotations = dict(doc.get("annotations") or {})
    annotations[SOURCE_DIGEST_ANNOTATION] = index.digest
    annotations[PLATFORMS_ANNOTATION] = platform_label(platforms)
    doc["annotations"] = annotations
    return json.dumps(doc, separators=(",", ":")).encode()

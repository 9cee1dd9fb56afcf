"""OCI referrers: the artifacts (signatures, SBOMs, attestations) that refer to a manifest at a registry.

Two ways to store them are in use, and a copy has to see both:
- OCI 1.1 manifests with a `subject` field, listed by the referrers API `GET /v2/<name>/referrers/<digest>`;
  "If the referrers API returns a 404, the client MUST fallback to pulling the referrers tag schema": an
  image index under the tag `sha256-<hex>` that the pushing clients keep (distribution spec 1.1, "Listing
  Referrers", "Referrers Tag Schema");
- cosign's tags beside the image, from before OCI 1.1: `sha256-<hex>.sig` (signatures: one layer per
  signature, a simple-signing payload with the signature in its `dev.cosignproject.cosign/signature`
  annotation), `.att` (attestations) and `.sbom`, each one manifest whose tag moves as cosign adds to it.

`find` lists both for one digest; the verifier and the copier call it. What it costs at Docker Hub, which
counts manifest GETs as pulls and HEADs as free version checks (docker/docs `docker-hub/usage/pulls.md`):
the referrers GET (counted as a pull here, since Docker does not say), a GET of the referrers tag where the
API is missing and the tag exists, and free HEADs of the three cosign tags.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ManifestError, RegistryError
from .manifests import OCI_INDEX, Descriptor, parse_descriptor, parse_manifest

COSIGN_SUFFIXES = (".sig", ".att", ".sbom")
_NOT_IN_TAGS = re.compile(r"[^A-Za-z0-9_.-]")


def fallback_tag(digest: str) -> str:
    """The referrers tag of `digest`: "the Truncated Algorithm, a `-` character, and the Truncated Encoded
    section, with any characters not allowed by tags replaced with `-`" (algorithm cut to 32 characters,
    encoded to 64): `sha256:ab…` is `sha256-ab…`."""
    algorithm, _, encoded = digest.partition(":")
    return _NOT_IN_TAGS.sub("-", f"{algorithm[:32]}-{encoded[:64]}")


def cosign_tag(digest: str, suffix: str = ".sig") -> str:
    """cosign's tag for what it stores about `digest`: `sha256:<hex>` -> `sha256-<hex>.sig` (or `.att`, `.sbom`)."""
    return fallback_tag(digest) + suffix


def cosign_tags(digest: str) -> tuple[str, ...]:
    """cosign's tags for `digest`: `sha256-<hex>.sig`, `.att`, `.sbom`."""
    return tuple(cosign_tag(digest, suffix) for suffix in COSIGN_SUFFIXES)


@dataclass(frozen=True)
class Referrer:
    """An artifact that refers to a manifest: its descriptor (`raw` holds `artifactType` and the
    annotations the listing gave), and the cosign tag it lives under (None: listed by the referrers API or
    the referrers tag, and stored by digest)."""

    descriptor: Descriptor
    tag: str | None = None

    @property
    def digest(self) -> str:
        return self.descriptor.digest

    @property
    def artifact_type(self) -> str | None:
        value = self.descriptor.raw.get("artifactType")
        return value if isinstance(value, str) else None


def _get(client: Any, repository: str, reference: str, floor: int | None) -> tuple[bytes, Any]:
    if floor is None:
        return client.get_manifest(repository, reference)
    return client.get_manifest(repository, reference, floor=floor)


def list_referrers(client: Any, repository: str, digest: str, *, floor: int | None = None) -> list[Descriptor]:
    """The manifests with a `subject` of `digest`: the referrers API, or where it answers 404 the
    referrers tag ("If the response to the referrers API is a 404, and the tag schema does not return a
    valid image index, the client SHOULD assume there are no referrers")."""
    where = f"referrers of {repository}@{digest}"
    listed = client.referrers_index(repository, digest, floor=floor)
    if listed is None:
        tag = fallback_tag(digest)
        if client.head_manifest(repository, tag) is None:  # free: most images have none
            return []
        body, info = _get(client, repository, tag, floor)
        try:
            index = parse_manifest(body, info.media_type, info.digest)
        except ManifestError:
            return []
        if not index.is_index:
            return []
        return _unique(list(index.children))
    return _unique([parse_descriptor(raw, where) for raw in listed])


def _unique(descriptors: list[Descriptor]) -> list[Descriptor]:
    first: dict[str, Descriptor] = {}
    for descriptor in descriptors:
        first.setdefault(descriptor.digest, descriptor)
    return list(first.values())


def find(client: Any, repository: str, digest: str, *, floor: int | None = None) -> list[Referrer]:
    """Every artifact that refers to `digest` in `repository` at the registry `client` talks to: the OCI
    1.1 referrers (`list_referrers`), then cosign's `.sig`, `.att` and `.sbom` tags that exist.

    `client`: a RegistryClient (or anything with its head_manifest, get_manifest and referrers_index).
    `floor`: send no counted GET that would take the registry's stated `ratelimit-remaining` to it or
    below (QuotaReserved). Raises RegistryError when the registry fails a request.
    """
    found = [Referrer(descriptor) for descriptor in list_referrers(client, repository, digest, floor=floor)]
    for tag in cosign_tags(digest):
        info = client.head_manifest(repository, tag)
        if info is not None:
            found.append(Referrer(Descriptor(info.media_type, info.digest, info.size), tag))
    return found


def subject_of(body: bytes) -> str | None:
    """The digest a manifest's `subject` names, if it has one."""
    try:
        subject = json.loads(body).get("subject")
    except (ValueError, AttributeError):
        return None
    digest = subject.get("digest") if isinstance(subject, dict) else None
    return digest if isinstance(digest, str) else None


def index_entry(body: bytes, digest: str, media_type: str) -> dict[str, Any]:
    """The descriptor a referrers list holds for a pushed manifest: "The value of the `artifactType` MUST
    be set to the `artifactType` value in the pushed manifest, if present. If the `artifactType` is empty or
    missing in a pushed image manifest, the value of `artifactType` MUST be set to the config descriptor
    `mediaType` value. All annotations from the pushed manifest MUST be copied to this descriptor."""
    doc = json.loads(body)
    entry: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(body)}
    config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    artifact_type = doc.get("artifactType") or config.get("mediaType")
    if artifact_type:
        entry["artifactType"] = artifact_type
    if isinstance(doc.get("annotations"), dict) and doc["annotations"]:
        entry["annotations"] = doc["annotations"]
    return entry


def add_to_fallback_index(client: Any, repository: str, subject: str, entries: Sequence[dict[str, Any]]) -> int:
    """Keep the referrers tag of `subject` listing `entries`, as the spec asks of a client whose push of a
    manifest with a `subject` was answered without `OCI-Subject` ("Pushing Manifests with Subject"): pull
    the list; "If that pull returns a manifest other than the expected image index, the client SHOULD
    report a failure and skip the remaining steps"; on 404 "begin with an empty image index"; add each
    descriptor not listed yet; push it under the same tag. Returns how many were added.

    Two clients updating one tag at once can lose an entry (the spec leaves that race to clients); the
    copier is the only writer of its repositories.
    """
    tag = fallback_tag(subject)
    try:
        body, info = client.get_manifest(repository, tag)
    except RegistryError as err:
        if err.status != 404:
            raise
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    else:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        if (doc.get("mediaType") or info.media_type) != OCI_INDEX or not isinstance(doc.get("manifests"), list):
            raise RegistryError(f"{repository}:{tag} is not an image index; its referrers list is left as it is")
    listed = {entry.get("digest") for entry in doc["manifests"] if isinstance(entry, dict)}
    added = [entry for entry in entries if entry["digest"] not in listed]
    if added:
        doc["manifests"].extend(added)
        client.put_manifest(repository, tag, json.dumps(doc, separators=(",", ":")).encode(), OCI_INDEX)
    return len(added)

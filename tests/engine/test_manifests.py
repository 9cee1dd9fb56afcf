"""Manifest parsing and platform selection: pure functions, no sockets."""

from __future__ import annotations

import json

import pytest

from lambdas.mirror.oci.errors import ManifestError, NoMatchingPlatform
from lambdas.mirror.oci.manifests import OCI_INDEX, parse_manifest, platform_matches, select

D = "sha256:" + "a" * 64


def _index(*entries: dict[str, object]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(entries)}).encode()


def _entry(digest: str, os_: str, arch: str, variant: str | None = None, **annotations: str) -> dict[str, object]:
    platform = {"os": os_, "architecture": arch, **({"variant": variant} if variant else {})}
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 10,
            "platform": platform, **({"annotations": annotations} if annotations else {})}


def test_a_platform_without_variant_matches_every_variant() -> None:
    assert platform_matches("linux/arm64/v8", "linux/arm64")
    assert platform_matches("linux/arm/v7", "linux/arm/v7")
    assert not platform_matches("linux/arm/v6", "linux/arm/v7")
    assert not platform_matches("linux/amd64", "linux/arm64")


def test_select_keeps_attestations_of_kept_platforms_only() -> None:
    amd, arm = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    body = _index(_entry(amd, "linux", "amd64"), _entry(arm, "linux", "arm64"),
                  _entry("sha256:" + "3" * 64, "unknown", "unknown", **{
                      "vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": amd}),
                  _entry("sha256:" + "4" * 64, "unknown", "unknown", **{
                      "vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": arm}))
    index = parse_manifest(body, "", D)
    assert [d.digest[7] for d in select(index, ["linux/arm64"])] == ["2", "4"]
    assert select(index, []) == index.children
    with pytest.raises(NoMatchingPlatform):
        select(index, ["windows/amd64"])


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"schemaVersion": 1, "fsLayers": []}',
                                  b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}',
                                  _index({"digest": "sha256:../../etc", "size": 1})])
def test_malformed_manifests_are_refused(body: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(body, "", D)


def test_the_document_media_type_wins_over_the_served_one() -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                       "config": {"digest": D, "size": 2}, "layers": []}).encode()
    manifest = parse_manifest(body, "application/octet-stream", D)
    assert manifest.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    assert [b.digest for b in manifest.blobs] == [D]

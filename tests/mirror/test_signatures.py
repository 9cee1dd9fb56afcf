"""Signatures travel with the image, proven by the sigstore project's own libraries: an image at a loopback
source (distribution 2.8, no referrers API) is signed with a key by @sigstore/sign, the bundle attached as an
OCI 1.1 referrer by @sigstore/oci (through the referrers tag), and signed again in cosign's `.sig` layout;
the mirror copies it; @sigstore/verify accepts the copies at the destination with the public key, and
rejects an image that was never signed. Digests are read back with skopeo."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

from lambdas.mirror.cli.main import main
from tests.engine.checks import skopeo_raw_digest
from tests.support.cosign_layout import sign_classic
from tests.support.images import push_image
from tests.support.registry import RegistryServer
from tests.support.sigstore import keypair, sign, verify

from .support import write_config


def sync(config: Path, destination: RegistryServer) -> dict[str, object]:
    out = io.StringIO()
    code = main(["sync", "--config", str(config), "--registry", destination.host, "--json"], out=out,
                err=io.StringIO())
    assert code == 0, out.getvalue()
    return dict(json.loads(out.getvalue()))


def test_both_signatures_arrive_digest_exact_and_sigstore_verifies_the_copy_with_the_public_key(
        tmp_path: Path, registry_factory: Callable[..., RegistryServer]) -> None:
    # Given a multi-platform image signed twice with one key: a Sigstore bundle and a cosign .sig
    source, destination = registry_factory("source"), registry_factory("destination")
    digest = push_image(source.host, "team/app", "v1", attestations=True, seed=41)
    key = keypair(tmp_path / "keys")
    bundle = sign(source.host, "team/app", digest, key)
    signature = sign_classic(source.host, "team/app", digest, key.load())
    assert verify(source.host, "team/app", "v1", key)[0] == 0  # the tools agree at the source

    # When the mirror copies the tag
    result = sync(write_config(tmp_path / "mirror.yaml", {"source": f"{source.host}/team/app", "tags": ["v1"],
                                                          "target": "mirror/app"}), destination)

    # Then @sigstore/verify accepts both signatures of the copy, and every digest is the source's
    (item,) = result["items"]  # type: ignore[attr-defined]
    assert (item["status"], item["referrers"], item["referrers_failed"]) == ("copied", 2, [])
    status, report = verify(destination.host, "mirror/app", "v1", key)
    assert (status, report["digest"], report["rejected"]) == (0, digest, [])
    assert sorted(v["kind"] for v in report["verified"]) == ["bundle", "cosign"]
    assert skopeo_raw_digest(destination.host, "mirror/app", "v1") == digest
    assert skopeo_raw_digest(destination.host, "mirror/app", bundle["digest"]) == bundle["digest"]
    assert skopeo_raw_digest(destination.host, "mirror/app", digest.replace(":", "-") + ".sig") == signature


def test_the_signatures_are_in_place_before_the_tag_moves(
        tmp_path: Path, registry_factory: Callable[..., RegistryServer]) -> None:
    source, destination = registry_factory("source"), registry_factory("destination")
    digest = push_image(source.host, "team/app", "v1", kind="oci-manifest", seed=42)
    key = keypair(tmp_path / "keys")
    bundle = sign(source.host, "team/app", digest, key)
    sign_classic(source.host, "team/app", digest, key.load())

    sync(write_config(tmp_path / "mirror.yaml", {"source": f"{source.host}/team/app", "tags": ["v1"],
                                                 "target": "mirror/app"}), destination)

    puts = [r.path.rsplit("/", 1)[-1] for r in destination.requests() if r.method == "PUT" and "/manifests/" in r.path]
    assert puts[-1] == "v1"
    assert {bundle["digest"], digest.replace(":", "-") + ".sig"} <= set(puts[:-1])


def test_an_image_never_signed_or_signed_with_another_key_is_rejected_at_the_destination(
        tmp_path: Path, registry_factory: Callable[..., RegistryServer]) -> None:
    # Given one image nobody signed and one signed with a key that is not ours
    source, destination = registry_factory("source"), registry_factory("destination")
    push_image(source.host, "team/app", "unsigned", seed=43)
    other = push_image(source.host, "team/app", "other", seed=44)
    ours, theirs = keypair(tmp_path / "ours"), keypair(tmp_path / "theirs")
    sign(source.host, "team/app", other, theirs)
    sign_classic(source.host, "team/app", other, theirs.load())

    # When both are mirrored
    sync(write_config(tmp_path / "mirror.yaml", {"source": f"{source.host}/team/app", "tags": ["unsigned", "other"],
                                                 "target": "mirror/app"}), destination)

    # Then the verifier refuses both with our key: nothing verified, and the foreign signatures rejected
    unsigned = verify(destination.host, "mirror/app", "unsigned", ours)
    foreign = verify(destination.host, "mirror/app", "other", ours)
    assert (unsigned[0], unsigned[1]["verified"], unsigned[1]["rejected"]) == (1, [], [])
    assert (foreign[0], foreign[1]["verified"]) == (1, [])
    assert sorted(r["kind"] for r in foreign[1]["rejected"]) == ["bundle", "cosign"]
    assert verify(destination.host, "mirror/app", "other", theirs)[0] == 0  # the copy itself is intact


def test_with_referrers_off_the_copy_carries_no_signature(
        tmp_path: Path, registry_factory: Callable[..., RegistryServer]) -> None:
    source, destination = registry_factory("source"), registry_factory("destination")
    digest = push_image(source.host, "team/app", "v1", seed=45)
    key = keypair(tmp_path / "keys")
    sign(source.host, "team/app", digest, key)
    sign_classic(source.host, "team/app", digest, key.load())
    before = len(source.requests())

    result = sync(write_config(tmp_path / "mirror.yaml", {"source": f"{source.host}/team/app", "tags": ["v1"],
                                                          "target": "mirror/app", "referrers": False}), destination)

    assert result["items"][0]["referrers"] is None  # type: ignore[index]
    assert verify(destination.host, "mirror/app", "v1", key)[:1] == (1,)
    asked = [r.path for r in source.requests()[before:]]
    assert asked and not [path for path in asked if "/referrers/" in path or "sha256-" in path]


def test_a_tag_held_to_a_signature_moves_with_that_signature(
        tmp_path: Path, registry_factory: Callable[..., RegistryServer]) -> None:
    # Given an image whose tag the mirror holds to our key (`verify`), signed with it
    source, destination = registry_factory("source"), registry_factory("destination")
    digest = push_image(source.host, "team/app", "v1", seed=46)
    key = keypair(tmp_path / "keys")
    sign_classic(source.host, "team/app", digest, key.load())
    sign(source.host, "team/app", digest, key)

    # When the mirror checks the signature and copies the tag
    result = sync(write_config(tmp_path / "mirror.yaml", {
        "source": f"{source.host}/team/app", "tags": ["v1"], "target": "mirror/app",
        "verify": {"cosign_public_key": key.public.read_text()}}), destination)

    # Then the tag moved, and the signatures that let it move are beside it for whoever checks them next
    (item,) = result["items"]  # type: ignore[attr-defined]
    assert (item["status"], item["referrers"]) == ("copied", 2)
    status, report = verify(destination.host, "mirror/app", "v1", key)
    assert (status, sorted(v["kind"] for v in report["verified"])) == (0, ["bundle", "cosign"])

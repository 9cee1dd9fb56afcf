"""The verifier against a signature cosign itself made: containers/image's fixture `dir-img-cosign-valid`.

Source: github.com/containers/image at df7e80d2d19872b61f352a8a182ec934dc0c2346, signature/fixtures/:
`cosign.pub`, `dir-img-cosign-valid/manifest.json` and `dir-img-cosign-valid/signature-1` (added in 64756915,
"Add Cosign verification support"; its test says "We prefer to test with a Cosign-created signature for
interoperability"). signature-1 is containers/image's storage of one cosign signature layer: the line
"\\0sigstore-json", then JSON with the layer's mediaType, its payload (base64) and its annotations.

The three files are not committed here: fetched material is kept only under the steering repository's shared/
(the tool library's rule). The tests read them from $COSIGN_FIXTURES, else from shared/fixtures/cosign/ beside
this checkout (where CI lays shared/), and are skipped, saying so, when neither holds them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ecr_mirror_cdk.signing_key import KeySource, load_public_key
from lambdas.mirror.cosign import SIGNATURE_ANNOTATION, SIMPLE_SIGNING, Rejected, check_simple_signing
from lambdas.mirror.registry import RegistryClient
from lambdas.mirror.signatures import Checker, Keys
from tests.support.cosign_layout import new_key, public_pem, push_classic
from tests.support.images import push_image
from tests.support.registry import RegistryServer

ROOT = Path(__file__).resolve().parents[2]
FILES = ("cosign.pub", "manifest.json", "signature-1")


def fixture_dir() -> Path | None:
    for candidate in (os.environ.get("COSIGN_FIXTURES"), ROOT.parent / "shared" / "fixtures" / "cosign"):
        if candidate and all((Path(candidate) / name).is_file() for name in FILES):
            return Path(candidate)
    return None


FIXTURES = fixture_dir()
pytestmark = pytest.mark.skipif(FIXTURES is None, reason=(
    "containers/image's cosign fixture is not here: put cosign.pub, dir-img-cosign-valid/manifest.json and "
    "dir-img-cosign-valid/signature-1 (containers/image df7e80d2, signature/fixtures/) into "
    "shared/fixtures/cosign/ or $COSIGN_FIXTURES"))


@pytest.fixture
def cosign_made() -> dict[str, Any]:
    assert FIXTURES is not None
    raw = (FIXTURES / "signature-1").read_bytes()
    header = b"\x00sigstore-json\n"
    assert raw.startswith(header)
    layer = json.loads(raw[len(header):])
    assert layer["mimeType"] == SIMPLE_SIGNING
    manifest = (FIXTURES / "manifest.json").read_bytes()
    return {"pem": (FIXTURES / "cosign.pub").read_text(), "payload": base64.b64decode(layer["payload"]),
            "signature": layer["annotations"][SIGNATURE_ANNOTATION],
            "digest": "sha256:" + hashlib.sha256(manifest).hexdigest()}


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def test_the_signature_cosign_made_verifies_with_its_public_key(cosign_made: dict[str, Any]) -> None:
    check_simple_signing(cosign_made["payload"], cosign_made["signature"], cosign_made["digest"],
                         load_public_key(cosign_made["pem"]))


@pytest.mark.parametrize("what", ["payload", "signature", "digest"])
def test_one_byte_changed_anywhere_fails(cosign_made: dict[str, Any], what: str) -> None:
    payload, signature, digest = cosign_made["payload"], cosign_made["signature"], cosign_made["digest"]
    if what == "payload":
        payload = flip(payload, payload.index(b"sha256:") + 10)  # a byte of the signed digest
    elif what == "signature":
        signature = base64.b64encode(flip(base64.b64decode(signature), 40)).decode()
    else:
        digest = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    with pytest.raises(Rejected):
        check_simple_signing(payload, signature, digest, load_public_key(cosign_made["pem"]))


def test_another_key_does_not_verify_the_cosign_signature(cosign_made: dict[str, Any]) -> None:
    with pytest.raises(Rejected, match="does not verify"):
        check_simple_signing(cosign_made["payload"], cosign_made["signature"], cosign_made["digest"],
                             load_public_key(public_pem(new_key())))


def test_the_checker_reads_the_cosign_signature_from_a_registry_in_cosigns_layout(
        cosign_made: dict[str, Any], registry_factory: Callable[..., RegistryServer]) -> None:
    # Given the cosign-made payload and signature as cosign pushes them: a `sha256-<hex>.sig` image
    registry = registry_factory("source")
    push_image(registry.host, "sample", "base", kind="oci-manifest")  # the repository exists
    push_classic(registry.host, "sample", cosign_made["digest"],
                 [(cosign_made["payload"], base64.b64decode(cosign_made["signature"]))])
    checker = Checker(Keys(), floor=None, remembered={}, now=0.0)

    verdict = checker.check(RegistryClient(registry.host), "sample", cosign_made["digest"],
                            KeySource("pem", cosign_made["pem"]))

    assert verdict.verified, verdict.reason

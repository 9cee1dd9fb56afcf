"""The signature formats over bytes (lambdas/mirror/oci/cosign.py): what is accepted, and each way it is refused."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from ecr_mirror_cdk.signing_key import load_public_key
from lambdas.mirror.oci.cosign import Rejected, check_bundle, check_simple_signing
from tests.support.cosign_layout import dsse_bundle, message_bundle, new_key, public_pem, sign, simple_signing_payload

DIGEST = "sha256:" + hashlib.sha256(b"a manifest").hexdigest()
OTHER = "sha256:" + hashlib.sha256(b"another manifest").hexdigest()
KEY = new_key()
PUBLIC = load_public_key(public_pem(KEY))


def edit_bundle(bundle: bytes, change: str) -> bytes:
    """The bundle with one part changed after signing."""
    doc = json.loads(bundle)
    if change == "dsse payload byte":
        payload = bytearray(base64.b64decode(doc["dsseEnvelope"]["payload"]))
        payload[payload.index(b"sha256") + 12] ^= 0x01
        doc["dsseEnvelope"]["payload"] = base64.b64encode(bytes(payload)).decode()
    elif change == "payload type":
        doc["dsseEnvelope"]["payloadType"] = "application/json"
    elif change == "no signatures":
        doc["dsseEnvelope"]["signatures"] = []
    elif change == "media type":
        doc["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.1"
    return json.dumps(doc).encode()


def test_a_classic_payload_signed_by_the_key_over_the_digest_verifies() -> None:
    payload = simple_signing_payload("registry.example.com/app", DIGEST)
    check_simple_signing(payload, base64.b64encode(sign(KEY, payload)).decode(), DIGEST, PUBLIC)


@pytest.mark.parametrize(("payload", "says"), [
    (simple_signing_payload("r/app", DIGEST, kind="atomic container signature"), "critical.type is not"),
    (simple_signing_payload("r/app", OTHER), f"the payload signs '{OTHER}', not {DIGEST}"),
    (b"not json", "is not JSON"),
])
def test_a_classic_payload_of_another_kind_or_digest_is_refused_even_when_signed(payload: bytes, says: str) -> None:
    with pytest.raises(Rejected, match=says.replace("(", r"\(")):
        check_simple_signing(payload, base64.b64encode(sign(KEY, payload)).decode(), DIGEST, PUBLIC)


def test_a_classic_signature_that_is_not_base64_is_refused() -> None:
    with pytest.raises(Rejected, match="not valid base64"):
        check_simple_signing(simple_signing_payload("r/app", DIGEST), "MEUC!!", DIGEST, PUBLIC)


@pytest.mark.parametrize("make", [dsse_bundle, message_bundle])
def test_a_bundle_from_the_key_over_the_digest_verifies_and_not_over_another(make: object) -> None:
    bundle = make(KEY, DIGEST)  # type: ignore[operator]
    check_bundle(bundle, DIGEST, PUBLIC)
    with pytest.raises(Rejected):
        check_bundle(bundle, OTHER, PUBLIC)


@pytest.mark.parametrize(("change", "says"), [
    ("dsse payload byte", "does not verify"),
    ("payload type", "payloadType is 'application/json'"),
    ("no signatures", "no signatures"),
    ("media type", "the bundle's mediaType is"),
])
def test_a_dsse_bundle_changed_after_signing_is_refused(change: str, says: str) -> None:
    with pytest.raises(Rejected, match=says):
        check_bundle(edit_bundle(dsse_bundle(KEY, DIGEST), change), DIGEST, PUBLIC)


def test_a_keyless_bundle_and_a_bundle_by_another_key_are_refused() -> None:
    with pytest.raises(Rejected, match="keyless"):
        check_bundle(dsse_bundle(KEY, DIGEST, certificate=True), DIGEST, PUBLIC)
    with pytest.raises(Rejected, match="does not verify with the configured key"):
        check_bundle(dsse_bundle(new_key(), DIGEST), DIGEST, PUBLIC)

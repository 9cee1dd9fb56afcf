"""The signature formats a held tag accepts, checked over bytes already fetched: pure functions, no network.

a) cosign's classic signature (cosign specs/SIGNATURE_SPEC.md; containers/image signature/internal/
   sigstore_payload.go reads the same): the tag `sha256-<hex>.sig` names an image manifest whose layers are
   simple-signing payloads (`application/vnd.dev.cosign.simplesigning.v1+json`), each with its base64 signature
   in the layer annotation `dev.cosignproject.cosign/signature`. The key signs the payload's bytes; the payload
   says `critical.type: cosign container image signature` and `critical.image.docker-manifest-digest`.
b) a sigstore bundle stored as an OCI 1.1 referrer (cosign specs/BUNDLE_SPEC.md: artifactType and layer
   `application/vnd.dev.sigstore.bundle.v0.3+json`, `subject` the image): either a DSSE envelope of an in-toto
   statement whose subject has the image's sha256 (what `cosign sign` writes in its new bundle format,
   cmd/cosign/cli/sign/sign.go signDigestBundle; cosign verify checks it with IntotoSubjectClaimVerifier), or a
   messageSignature whose messageDigest is the image digest, that is a signature over the manifest's bytes.
   Key-based only: a bundle carrying a certificate (Fulcio, keyless) is refused, and no transparency-log entry
   is checked (the key is the trust).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ecr_mirror_cdk.signing_key import PublicKey

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO = "application/vnd.in-toto+json"
MAX_PAYLOAD = 64 * 1024  # a payload or bundle is a few kB; a larger blob is not read


class Rejected(Exception):
    """A signature that does not hold this digest to this key; the message says why, in one line."""


def verify_signature(key: PublicKey, signature: bytes, *, message: bytes | None = None,
                     sha256: bytes | None = None) -> None:
    """Check `signature` over `message` (or over the message whose SHA-256 is `sha256`); Rejected if it fails.
    ECDSA P-256 with SHA-256, RSA PKCS #1 v1.5 with SHA-256 (signing_key says why only these)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    algorithm: Any = Prehashed(hashes.SHA256()) if message is None else hashes.SHA256()
    data = message if message is not None else sha256
    if data is None:
        raise ValueError("verify_signature needs a message or its sha256")
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        else:
            raise Rejected(f"unsupported key type {type(key).__name__}")
    except InvalidSignature:
        raise Rejected("the signature does not verify with the configured key") from None


def _b64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise Rejected(f"{what} is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Rejected(f"{what} is not valid base64") from None


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise Rejected(f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise Rejected(f"{what} is not a JSON object")
    return doc


def check_simple_signing(payload: bytes, signature_b64: Any, digest: str, key: PublicKey) -> None:
    """A classic cosign signature layer: the signature first (nothing unsigned is trusted), then the payload
    names this digest as a container image signature. Rejected otherwise."""
    verify_signature(key, _b64(signature_b64, f"annotation {SIGNATURE_ANNOTATION}"), message=payload)
    critical = _json(payload, "the simple-signing payload").get("critical")
    if not isinstance(critical, dict) or critical.get("type") != SIGNATURE_TYPE:
        raise Rejected(f"the payload's critical.type is not {SIGNATURE_TYPE!r}")
    image = critical.get("image")
    signed = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if signed != digest:
        raise Rejected(f"the payload signs {signed!r}, not {digest}")


def _size(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def signature_layers(manifest: dict[str, Any]) -> list[tuple[str, int, Any]]:
    """(digest, size, base64 signature) of each simple-signing layer of a `.sig` manifest."""
    layers = manifest.get("layers")
    found = []
    for layer in layers if isinstance(layers, list) else []:
        if isinstance(layer, dict) and layer.get("mediaType") == SIMPLE_SIGNING:
            annotations = layer["annotations"] if isinstance(layer.get("annotations"), dict) else {}
            found.append((str(layer.get("digest")), _size(layer.get("size")), annotations.get(SIGNATURE_ANNOTATION)))
    return found


def bundle_layer(manifest: dict[str, Any], digest: str) -> tuple[str, int]:
    """(digest, size) of the bundle a referrer manifest carries, once it says it refers to `digest`."""
    subject = manifest.get("subject")
    if not isinstance(subject, dict) or subject.get("digest") != digest:
        raise Rejected(f"the referrer's subject is not {digest}")
    layers = manifest.get("layers")
    for layer in layers if isinstance(layers, list) else []:
        if isinstance(layer, dict) and layer.get("mediaType") == BUNDLE:
            return str(layer.get("digest")), _size(layer.get("size"))
    raise Rejected(f"the referrer has no {BUNDLE} layer")


def _pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding, what the key signs (secure-systems-lab/dsse protocol.md)."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def check_bundle(data: bytes, digest: str, key: PublicKey) -> None:
    """A sigstore bundle v0.3 over `digest`, signed by `key`; Rejected otherwise."""
    bundle = _json(data, "the bundle")
    if bundle.get("mediaType") != BUNDLE:
        raise Rejected(f"the bundle's mediaType is {bundle.get('mediaType')!r}, not {BUNDLE}")
    material = bundle.get("verificationMaterial")
    if not isinstance(material, dict) or "publicKey" not in material:
        raise Rejected("a keyless bundle (Fulcio certificate): not supported, only key-based signatures are")
    algorithm, hex_digest = digest.split(":", 1)
    if isinstance(bundle.get("dsseEnvelope"), dict):
        envelope = bundle["dsseEnvelope"]
        payload = _b64(envelope.get("payload"), "the DSSE payload")
        payload_type = envelope.get("payloadType")
        if payload_type != IN_TOTO:
            raise Rejected(f"the DSSE payloadType is {payload_type!r}, not {IN_TOTO}")
        signatures = envelope.get("signatures")
        if not isinstance(signatures, list) or not signatures:
            raise Rejected("the DSSE envelope has no signatures")
        failures = []
        for entry in signatures:
            try:
                verify_signature(key, _b64(entry.get("sig") if isinstance(entry, dict) else None, "a DSSE sig"),
                                 message=_pae(payload_type, payload))
                break
            except Rejected as err:
                failures.append(str(err))
        else:
            raise Rejected(failures[0])
        subjects = _json(payload, "the in-toto statement").get("subject")
        digests = [s.get("digest") for s in (subjects if isinstance(subjects, list) else []) if isinstance(s, dict)]
        if not any(isinstance(d, dict) and d.get(algorithm) == hex_digest for d in digests):
            raise Rejected(f"the in-toto statement has no subject {digest}")
        return
    message = bundle.get("messageSignature")
    if isinstance(message, dict):
        signed = message["messageDigest"] if isinstance(message.get("messageDigest"), dict) else {}
        if signed.get("algorithm") != "SHA2_256" or algorithm != "sha256":
            raise Rejected("the messageSignature is not over a SHA2_256 digest")
        if _b64(signed.get("digest"), "the messageDigest").hex() != hex_digest:
            raise Rejected(f"the messageSignature signs another digest than {digest}")
        verify_signature(key, _b64(message.get("signature"), "the messageSignature"), sha256=bytes.fromhex(hex_digest))
        return
    raise Rejected("the bundle has neither a dsseEnvelope nor a messageSignature")

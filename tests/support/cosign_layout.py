"""Signatures in cosign's own layouts, made with keys the tests generate, pushed over the distribution API.

Independent of the engine on purpose (no import of lambdas.mirror): the verifier is checked against what
this module writes, which follows cosign's documents, not the verifier's code.

- classic: cosign specs/SIGNATURE_SPEC.md. The payload is what cosign's Go json.Marshal writes (compact, in
  field order, `"optional":null` without annotations: containers/image's fixture dir-img-cosign-valid, made by
  cosign, has exactly these bytes' shape), pushed as a layer of an image tagged `sha256-<hex>.sig`.
- bundle: cosign specs/BUNDLE_SPEC.md. A sigstore bundle v0.3 blob, a manifest with artifactType and subject
  (empty config), and, for a registry without the referrers API (distribution 2.8), the index under the
  tag `sha256-<hex>` (OCI distribution spec, referrers tag schema). cosign 3's `sign` puts a DSSE envelope of
  an in-toto statement in it (cmd/cosign/cli/sign/sign.go, signDigestBundle).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from tests.support.images import OCI_INDEX, OCI_MANIFEST, Pusher, descriptor, digest_of

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
EMPTY = "application/vnd.oci.empty.v1+json"
IN_TOTO = "application/vnd.in-toto+json"
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"  # cosign pkg/types/predicate.go

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def new_key(kind: str = "ecdsa") -> PrivateKey:
    """P-256, as `cosign generate-key-pair` makes; or a 2048-bit RSA key."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: PrivateKey) -> str:
    """cosign.pub's form: PEM `PUBLIC KEY`, PKIX (cosign specs/SIGNATURE_SPEC.md)."""
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def sign(key: PrivateKey, data: bytes, *, prehashed: bool = False) -> bytes:
    algorithm: Any = Prehashed(hashes.SHA256()) if prehashed else hashes.SHA256()
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), algorithm)
    return key.sign(data, ec.ECDSA(algorithm))


def simple_signing_payload(reference: str, digest: str, *, kind: str = "cosign container image signature") -> bytes:
    document = {"critical": {"identity": {"docker-reference": reference},
                             "image": {"docker-manifest-digest": digest}, "type": kind}, "optional": None}
    return json.dumps(document, separators=(",", ":")).encode()


def push_classic(registry: str, repository: str, digest: str, signatures: list[tuple[bytes, bytes]], *,
                 username: str | None = None, password: str | None = None) -> str:
    """The `sha256-<hex>.sig` image: one simple-signing layer per (payload, signature); returns its digest."""
    pusher = Pusher(registry, username=username, password=password)
    layers = []
    for payload, signature in signatures:
        pusher.blob(repository, payload)
        annotation = {"dev.cosignproject.cosign/signature": base64.b64encode(signature).decode()}
        layers.append(descriptor(SIMPLE_SIGNING, payload, annotations=annotation))
    config = json.dumps({"architecture": "", "created": "0001-01-01T00:00:00Z", "os": "", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]}},
                        separators=(",", ":")).encode()
    pusher.blob(repository, config)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": descriptor("application/vnd.oci.image.config.v1+json", config), "layers": layers}
    return pusher.manifest(repository, digest.replace(":", "-") + ".sig",
                           json.dumps(manifest, separators=(",", ":")).encode(), OCI_MANIFEST)


def sign_classic(registry: str, repository: str, digest: str, key: PrivateKey, *, username: str | None = None,
                 password: str | None = None) -> str:
    """What `cosign sign --key` (classic format) pushes for `repository@digest`."""
    payload = simple_signing_payload(f"{registry}/{repository}", digest)
    return push_classic(registry, repository, digest, [(payload, sign(key, payload))], username=username,
                        password=password)


def _pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding (secure-systems-lab/dsse protocol.md)."""
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


def dsse_bundle(key: PrivateKey, digest: str, *, certificate: bool = False) -> bytes:
    """cosign 3's new bundle for `cosign sign --key`: an in-toto statement about the digest in DSSE."""
    statement = {"_type": "https://in-toto.io/Statement/v1",
                 "subject": [{"digest": {"sha256": digest.split(":", 1)[1]}}],
                 "predicateType": COSIGN_SIGN_PREDICATE, "predicate": {}}
    payload = json.dumps(statement, separators=(",", ":")).encode()
    signature = sign(key, _pae(IN_TOTO, payload))
    material: dict[str, Any] = ({"certificate": {"rawBytes": base64.b64encode(b"not a real certificate").decode()}}
                                if certificate else {"publicKey": {"hint": "test-key"}})
    return json.dumps({"mediaType": BUNDLE, "verificationMaterial": {**material, "tlogEntries": []},
                       "dsseEnvelope": {"payload": base64.b64encode(payload).decode(), "payloadType": IN_TOTO,
                                        "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}]}},
                      separators=(",", ":")).encode()


def message_bundle(key: PrivateKey, digest: str) -> bytes:
    """A messageSignature bundle over the manifest whose sha256 is `digest` (signed prehashed)."""
    raw = bytes.fromhex(digest.split(":", 1)[1])
    signature = sign(key, raw, prehashed=True)
    return json.dumps({"mediaType": BUNDLE, "verificationMaterial": {"publicKey": {"hint": "test-key"}},
                       "messageSignature": {"messageDigest": {"algorithm": "SHA2_256",
                                                              "digest": base64.b64encode(raw).decode()},
                                            "signature": base64.b64encode(signature).decode()}},
                      separators=(",", ":")).encode()


def push_bundle(registry: str, repository: str, digest: str, bundle: bytes) -> str:
    """The bundle as an OCI 1.1 referrer of `digest`, listed in the fallback tag's index; returns its digest."""
    pusher = Pusher(registry)
    subject = pusher.get_manifest(repository, digest)
    pusher.blob(repository, bundle)
    pusher.blob(repository, b"{}")
    manifest = json.dumps({
        "mediaType": OCI_MANIFEST, "schemaVersion": 2, "artifactType": BUNDLE,
        "config": descriptor(EMPTY, b"{}"), "layers": [descriptor(BUNDLE, bundle)],
        "subject": {"mediaType": json.loads(subject)["mediaType"], "digest": digest, "size": len(subject)},
        "annotations": {"dev.sigstore.bundle.content": "dsse-envelope"}}, separators=(",", ":")).encode()
    referrer = pusher.manifest(repository, digest_of(manifest), manifest, OCI_MANIFEST)
    tag = digest.replace(":", "-")
    try:
        index = json.loads(pusher.get_manifest(repository, tag))
    except RuntimeError:  # no referrers yet
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    index["manifests"].append({"mediaType": OCI_MANIFEST, "digest": referrer, "size": len(manifest),
                               "artifactType": BUNDLE})
    pusher.manifest(repository, tag, json.dumps(index, separators=(",", ":")).encode(), OCI_INDEX)
    return referrer

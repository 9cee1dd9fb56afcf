"""The public key a mirrored tag is held to (`verify.cosign_public_key` in mirror.yaml): where it is read from
and which keys are accepted. Shared by synth (an inline key is checked there) and the planner Lambda (which
reads a stored key at run time); `cryptography` is imported only when a key is parsed.

Where: an inline PEM, `ssm:<parameter name>` or `secretsmanager:<secret name>`, the prefixes CloudFormation's
dynamic references use for the same two stores ({{resolve:ssm:...}}, {{resolve:secretsmanager:...}}).

Which keys: those whose cosign signatures mean one thing. cosign verifies a `--key` signature with SHA-256
whatever the key (cosign pkg/signature/keys.go, LoadPublicKey "hardcoding SHA256"; containers/image the same,
signature/internal/sigstore_payload.go `sigstoreHarcodedHashAlgorithm`), but signs with the key's default
(sigstore's LoadDefaultSignerVerifier, cosign pkg/cosign/keys.go LoadPrivateKey): SHA-384 for P-384, SHA-512
for P-521, Ed25519ph for Ed25519. Only ECDSA P-256 (what `cosign generate-key-pair` makes) and RSA keys are
signed and verified the same way, SHA-256 (RSA: PKCS #1 v1.5), so only those are accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

PEM_BEGIN = "-----BEGIN PUBLIC KEY-----"
SSM = "ssm:"
SECRETS_MANAGER = "secretsmanager:"
RSA_BITS = (2048, 4096)  # cosign's own RSA keys are 2048 to 4096 bits (sigstore's algorithm registry)
# SSM parameter names (SSM API reference, PutParameter Name) and Secrets Manager secret names.
_SSM_NAME = re.compile(r"/?[a-zA-Z0-9_.\-]+(?:/[a-zA-Z0-9_.\-]+)*")
SECRET_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")


@dataclass(frozen=True)
class KeySource:
    kind: str  # "pem", "ssm" or "secretsmanager"
    value: str  # the PEM text, or the parameter or secret name


def key_source(text: str) -> KeySource:
    """Where `text` says the key is; ValueError (one line, no location) when it says nothing usable."""
    stripped = text.strip()
    if stripped.startswith(PEM_BEGIN):
        return KeySource("pem", stripped + "\n")
    if stripped.startswith(SSM):
        name = stripped[len(SSM):]
        if not (len(name) <= 1011 and _SSM_NAME.fullmatch(name)):
            raise ValueError(f"{name!r} is not an SSM parameter name like /ecr-mirror/cosign.pub")
        return KeySource("ssm", name)
    if stripped.startswith(SECRETS_MANAGER):
        name = stripped[len(SECRETS_MANAGER):]
        if not SECRET_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a Secrets Manager secret name")
        return KeySource("secretsmanager", name)
    if "BEGIN" in stripped and "PRIVATE KEY" in stripped:
        raise ValueError("this is a private key: give the public key (cosign.pub), never the private one")
    raise ValueError(f"must be a PEM public key ({PEM_BEGIN} ...), ssm:<parameter name> or "
                     f"secretsmanager:<secret name>, got {stripped[:40]!r}")


def load_public_key(pem: str) -> PublicKey:
    """The key in `pem`; ValueError with a one-line reason when it is not an accepted public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    text = pem.strip()
    if not text.startswith(PEM_BEGIN):
        raise ValueError(f"not a PEM public key: it must start with {PEM_BEGIN}")
    try:
        key = serialization.load_pem_public_key(text.encode())
    except (ValueError, TypeError):
        raise ValueError("not a readable PEM public key: the base64 between its BEGIN and END lines is not a "
                         "DER SubjectPublicKeyInfo") from None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"an ECDSA {key.curve.name} key: only P-256 (secp256r1) ECDSA keys are accepted, "
                             "the curve cosign signs and verifies with SHA-256 alike")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if not RSA_BITS[0] <= key.key_size <= RSA_BITS[1]:
            raise ValueError(f"a {key.key_size}-bit RSA key: RSA keys of {RSA_BITS[0]} to {RSA_BITS[1]} bits "
                             "are accepted")
        return key
    raise ValueError(f"a {type(key).__name__.lstrip('_')} key: only ECDSA P-256 and RSA keys are accepted "
                     "(cosign signs other kinds with a hash its verification does not use)")

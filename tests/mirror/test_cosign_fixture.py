"""The verifier against a signature cosign itself made: containers/image's fixture `dir-img-cosign-valid`.

Source: github.com/containers/image at df7e80d2d19872b61f352a8a182ec934dc0c2346, signature/fixtures/:
`cosign.pub`, `dir-img-cosign-valid/manifest.json` and `dir-img-cosign-valid/signature-1` (added in 64756915,
"Add Cosign verification support"; its test says "We prefer to test with a Cosign-created signature for
interoperability"). signature-1 is containers/image's storage of one cosign signature layer: the line
"\\0sigstore-json", then JSON with the layer's mediaType, its payload (base64) and its annotations.

Debian ships the same files in that library's source package, golang-github-containers-image-dev (5.23.1-4 in
bookworm): `make test` fetches that one .deb and unpacks it into .test-deps/ (Makefile, COSIGN_FIXTURE_DEB), and
the files' sha256 are pinned below, so the fixture is exactly the one cosign made. $COSIGN_FIXTURES names another
folder holding the three files.
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
from lambdas.mirror.oci.cosign import SIGNATURE_ANNOTATION, SIMPLE_SIGNING, Rejected, check_simple_signing
from lambdas.mirror.oci.registry import RegistryClient
from lambdas.mirror.planning.signatures import Checker, Keys
from tests.support.cosign_layout import new_key, public_pem, push_classic
from tests.support.images import push_image
from tests.support.registry import RegistryServer

ROOT = Path(__file__).resolve().parents[2]
FILES = ("cosign.pub", "manifest.json", "signature-1")


UNPACKED = (ROOT / ".test-deps" / "containers-image"
            / "usr/share/gocode/src/github.com/containers/image/signature/fixtures")
SHA256 = {"cosign.pub": "fa7f35cb9d779673cfee9ffeecaf686b4ef98b5a11046432e835fdaab4692a66",
          "manifest.json": "634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00",
          "signature-1": "19e5549e4c924de371d370c34217038c60f58df5c987f578677cdea9008c249b"}


def fixture_files() -> dict[str, bytes]:
    """The three files, checked against their pinned sha256; fails (never skips) when they are not here."""
    if os.environ.get("COSIGN_FIXTURES"):
        folder = Path(os.environ["COSIGN_FIXTURES"])
        paths = {name: folder / name for name in FILES}
    else:
        valid = UNPACKED / "dir-img-cosign-valid"
        paths = {"cosign.pub": UNPACKED / "cosign.pub", "manifest.json": valid / "manifest.json",
                 "signature-1": valid / "signature-1"}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        pytest.fail(f"cosign's fixture is missing ({', '.join(missing)}): make test fetches it "
                    "(make .test-deps/containers-image/.unpacked)", pytrace=False)
    files = {name: path.read_bytes() for name, path in paths.items()}
    assert {name: hashlib.sha256(data).hexdigest() for name, data in files.items()} == SHA256
    return files


@pytest.fixture
def cosign_made() -> dict[str, Any]:
    files = fixture_files()
    raw = files["signature-1"]
    header = b"\x00sigstore-json\n"
    assert raw.startswith(header)
    layer = json.loads(raw[len(header):])
    assert layer["mimeType"] == SIMPLE_SIGNING
    manifest = files["manifest.json"]
    return {"pem": files["cosign.pub"].decode(), "payload": base64.b64decode(layer["payload"]),
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

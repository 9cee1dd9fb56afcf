"""Docker Hardened Images (`dhi.io/…`) as an upstream, against a loopback stand-in that answers as dhi.io does.

Docker's documentation: "You must authenticate to the Docker Hardened Images registry (dhi.io) to pull
images. Use your Docker ID credentials (the same username and password you use for Docker Hub)", or an
access token (docker/docs `content/manuals/dhi/how-to/use.md`, `verify.md`). Its challenge sends clients to
the token endpoint `https://dhi.io/token` with `service=registry.docker.io`, which answers 401 to an
anonymous token request (clients quote it in their errors: `GET https://dhi.io/token?scope=repository%3A…
%3Apull&service=registry.docker.io: 401 Unauthorized`). The stand-in is distribution 2.8 behind a token
issuer with that service that refuses anonymous callers; the engine learns realm and service from the
challenge, so dhi.io needs no code of its own, only its host in `registry_credentials`.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lambdas.mirror.cli.main import main
from tests.engine.checks import skopeo_raw_digest
from tests.support.cosign_layout import new_key, sign_classic
from tests.support.images import push_artifact, push_image
from tests.support.moto import moto_client
from tests.support.private import USER, PrivateRegistry, bearer_registry, secret_value
from tests.support.registry import RegistryServer
from tests.support.token_issuer import TokenIssuer

from .support import write_config

IN_TOTO = "application/vnd.in-toto+json"


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[TokenIssuer]:
    with TokenIssuer(tmp_path / "dhi-issuer", anonymous=False, service="registry.docker.io") as started:
        yield started


@pytest.fixture
def dhi(aws: str, issuer: TokenIssuer, registry_factory: Callable[..., RegistryServer]) -> PrivateRegistry:
    return bearer_registry(registry_factory, issuer, moto_client("secretsmanager", aws))


def hub_secret(aws: str, dhi: PrivateRegistry) -> str:
    """The Docker Hub secret the stack creates (`docker_hub_credentials`), holding the Docker ID and token."""
    name = f"ecr-pullthroughcache/docker-hub-{uuid.uuid4().hex[:8]}"
    moto_client("secretsmanager", aws).create_secret(Name=name, SecretString=secret_value(dhi.token))
    return name


def sync(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["sync", "--json", *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_a_hardened_image_is_copied_with_its_attestation_and_signature_on_docker_hub_credentials(
        aws: str, tmp_path: Path, dhi: PrivateRegistry, issuer: TokenIssuer,
        registry_factory: Callable[..., RegistryServer]) -> None:
    # Given dhi.io/python with an in-toto attestation (an OCI 1.1 referrer) and a cosign signature, and a
    # mirror.yaml that logs in to dhi.io with the Docker Hub secret
    destination = registry_factory("destination")
    digest = push_image(dhi.host, "python", "3.13", attestations=True, seed=71, username=USER, password=dhi.token)
    statement = json.dumps({"_type": "https://in-toto.io/Statement/v1", "predicateType": "https://slsa.dev/provenance/v1",
                            "subject": [{"digest": {"sha256": digest[7:]}}]}).encode()
    attestation = push_artifact(dhi.host, "python", digest, statement, artifact_type=IN_TOTO, username=USER,
                                password=dhi.token)
    signature = sign_classic(dhi.host, "python", digest, new_key(), username=USER,
                            password=dhi.token)
    secret = hub_secret(aws, dhi)
    config = write_config(tmp_path / "mirror.yaml", {"source": "dhi.io/python", "tags": ["3.13"]},
                          docker_hub_credentials={"secret_name": secret, "existing_secret": True},
                          registry_credentials={"dhi.io": secret})
    issuer.requests.clear()

    # When the mirror syncs it, logged in with that secret
    code, out, err = sync("--config", str(config), "--registry", destination.host, "--upstream",
                          f"dhi.io={dhi.host}", "--credentials-from-secrets")

    # Then the image, its attestation and its signature are at mirror/dhi.io/python, digest for digest, and
    # every token dhi.io's stand-in issued was for the Docker ID, for the service its challenge named
    assert code == 0, err
    (item,) = json.loads(out)["items"]
    assert (item["status"], item["repository"], item["referrers"]) == ("copied", "mirror/dhi.io/python", 2)
    for reference, expected in (("3.13", digest), (attestation, attestation),
                                (digest.replace(":", "-") + ".sig", signature)):
        assert skopeo_raw_digest(destination.host, "mirror/dhi.io/python", reference) == expected
    assert issuer.requests and {(r["user"], r["service"]) for r in issuer.requests} == {(USER, "registry.docker.io")}


def test_without_credentials_dhi_io_refuses_the_mirror_and_says_so(
        tmp_path: Path, dhi: PrivateRegistry, registry_factory: Callable[..., RegistryServer]) -> None:
    destination = registry_factory("destination")
    push_image(dhi.host, "python", "3.13", seed=72, username=USER, password=dhi.token)
    config = write_config(tmp_path / "mirror.yaml", {"source": "dhi.io/python", "tags": ["3.13"]})

    code, out, _ = sync("--config", str(config), "--registry", destination.host, "--upstream", f"dhi.io={dhi.host}")

    (item,) = json.loads(out)["items"]
    assert (code, item["status"]) == (1, "failed")
    assert "refused anonymous access (HTTP 401)" in item["error"]

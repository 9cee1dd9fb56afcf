"""Private upstreams: each registry logs in with its own Secrets Manager secret (moto), against real
registries behind htpasswd (Basic) and a token issuer (Bearer); a rotated token reaches warm endpoints."""

from __future__ import annotations

import io
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lambdas.mirror.aws.connect import connect
from lambdas.mirror.cli.main import main
from lambdas.mirror.planning.plan import plan
from lambdas.mirror.planning.sync import run_tasks
from lambdas.mirror.planning.task import Action
from lambdas.mirror.settings import SERVICE_NAME
from tests.engine.checks import missing_content, skopeo_raw_digest
from tests.support.images import push_image
from tests.support.moto import moto_client
from tests.support.private import USER, PrivateRegistry, basic_registry, bearer_registry, secret_value
from tests.support.registry import RegistryServer
from tests.support.token_issuer import TokenIssuer

from .support import config, write_config


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[TokenIssuer]:
    with TokenIssuer(tmp_path / "issuer", anonymous=False) as started:
        yield started


@pytest.fixture
def basic(aws: str, tmp_path: Path, registry_factory: Callable[..., RegistryServer]) -> PrivateRegistry:
    return basic_registry(registry_factory, tmp_path, moto_client("secretsmanager", aws))


@pytest.fixture
def bearer(aws: str, issuer: TokenIssuer, registry_factory: Callable[..., RegistryServer]) -> PrivateRegistry:
    return bearer_registry(registry_factory, issuer, moto_client("secretsmanager", aws))


@pytest.fixture
def destination(registry_factory: Callable[..., RegistryServer]) -> RegistryServer:
    return registry_factory("destination")


def push(private: PrivateRegistry, tag: str, seed: int) -> str:
    return push_image(private.host, "team/app", tag, seed=seed, username=USER, password=private.token)


def image(private: PrivateRegistry, *tags: str) -> dict[str, object]:
    return {"source": f"{private.host}/team/app", "tags": list(tags), "target": f"mirror/{private.kind}"}


def test_an_image_from_a_basic_and_a_bearer_registry_lands_byte_exact_with_each_ones_secret(
        basic: PrivateRegistry, bearer: PrivateRegistry, destination: RegistryServer) -> None:
    # Given a private image on each registry, and the map the stack hands the Lambdas
    digests = {basic.kind: push(basic, "v1", 31), bearer.kind: push(bearer, "v1", 32)}
    endpoints = connect(destination.host, credentials={basic.host: basic.secret, bearer.host: bearer.secret})

    # When the planner and the copier run
    planned = plan(config(image(basic, "v1"), image(bearer, "v1")), endpoints)
    outcomes = run_tasks(planned.tasks(), endpoints)

    # Then each image landed whole, digest for digest
    assert [o.status for o in outcomes] == ["copied", "copied"]
    for kind, digest in digests.items():
        assert skopeo_raw_digest(destination.host, f"mirror/{kind}", "v1") == digest
        assert missing_content(destination.host, f"mirror/{kind}", "v1") == []


def test_without_their_secrets_both_registries_refuse_the_mirror(
        basic: PrivateRegistry, bearer: PrivateRegistry, destination: RegistryServer) -> None:
    push(basic, "v1", 33)
    push(bearer, "v1", 34)

    planned = plan(config(image(basic, "v1"), image(bearer, "v1")), connect(destination.host))

    assert [i.action for i in planned.items] == [Action.FAILED, Action.FAILED]
    assert "unauthorized with anonymous access" in planned.items[0].reason
    assert "refused anonymous access (HTTP 401)" in planned.items[1].reason


@pytest.mark.parametrize("kind", ["basic", "bearer"])
def test_a_rotated_token_reaches_warm_endpoints_within_max_age(
        kind: str, request: pytest.FixtureRequest, destination: RegistryServer, issuer: TokenIssuer) -> None:
    # Given warm endpoints that copied with the first token, re-reading the secret after 1 s
    private: PrivateRegistry = request.getfixturevalue(kind)
    push(private, "v1", 35)
    endpoints = connect(destination.host, credentials={private.host: private.secret}, secret_max_age=1)
    first = run_tasks(plan(config(image(private, "v1")), endpoints).tasks(), endpoints)
    before = endpoints.source(private.host)
    token_requests = len(issuer.requests)

    # When a new token is stored and the old one revoked, and a new tag appears
    private.rotate()
    digest = push(private, "v2", 36)
    time.sleep(1.1)

    # Then the same endpoints copy it, with a new client: a bearer token the old login earned is gone too
    outcomes = run_tasks(plan(config(image(private, "v2")), endpoints).tasks(), endpoints)
    assert [o.status for o in first + outcomes] == ["copied", "copied"]
    assert skopeo_raw_digest(destination.host, f"mirror/{kind}", "v2") == digest
    assert endpoints.source(private.host) is not before
    if kind == "bearer":
        assert [r["user"] for r in issuer.requests[token_requests:]][:1] == [USER]


def test_a_refused_token_is_named_by_its_secret_and_never_quoted(
        basic: PrivateRegistry, destination: RegistryServer, caplog: pytest.LogCaptureFixture) -> None:
    # Given a secret whose token the registry does not accept
    push(basic, "v1", 37)
    wrong = secrets.token_urlsafe(24)
    basic.secretsmanager.put_secret_value(SecretId=basic.secret, SecretString=secret_value(wrong))
    caplog.set_level(logging.INFO)  # what a Lambda logs; botocore's DEBUG would print any response body
    caplog.set_level(logging.DEBUG, logger=SERVICE_NAME)
    endpoints = connect(destination.host, credentials={basic.host: basic.secret})

    # When the planner HEADs its image, and the copier tries it anyway
    planned = plan(config(image(basic, "v1")), endpoints)
    [outcome] = run_tasks([planned.items[0].task], endpoints)

    # Then both say which user and secret were refused, and neither quotes the token
    assert planned.items[0].action is Action.FAILED and outcome.status == "failed"
    for reason in (planned.items[0].reason, outcome.error):
        assert f"unauthorized with user '{USER}' from secret {basic.secret}" in reason
    assert caplog.text and wrong not in caplog.text + planned.items[0].reason + outcome.error


def test_the_cli_logs_in_with_the_configs_secrets_and_prints_no_token(
        tmp_path: Path, basic: PrivateRegistry, bearer: PrivateRegistry, destination: RegistryServer) -> None:
    # Given a config naming a secret per registry, as the stack's config does
    digests = {basic.kind: push(basic, "v1", 38), bearer.kind: push(bearer, "v1", 39)}
    cfg = write_config(tmp_path / "mirror.yaml", image(basic, "v1"), image(bearer, "v1"),
                       registry_credentials={basic.host: basic.secret, bearer.host: bearer.secret})
    out, err = io.StringIO(), io.StringIO()

    # When the user syncs with --credentials-from-secrets, logging everything
    code = main(["sync", "--config", str(cfg), "--registry", destination.host, "--credentials-from-secrets",
                 "--verbose", "--json"], out=out, err=err)

    # Then both images are copied, and no token is in the report or the logs
    assert code == 0, out.getvalue() + err.getvalue()
    for kind, digest in digests.items():
        assert skopeo_raw_digest(destination.host, f"mirror/{kind}", "v1") == digest
    assert '"message": "copied ' in err.getvalue()  # the engine's logs were on
    text = out.getvalue() + err.getvalue()
    assert basic.token not in text and bearer.token not in text


def test_registry_credentials_on_the_command_line_name_one_registry_s_secret(
        tmp_path: Path, basic: PrivateRegistry, bearer: PrivateRegistry, destination: RegistryServer) -> None:
    push(basic, "v1", 40)
    push(bearer, "v1", 41)
    cfg = write_config(tmp_path / "mirror.yaml", image(basic, "v1"), image(bearer, "v1"))
    out, err = io.StringIO(), io.StringIO()

    code = main(["sync", "--config", str(cfg), "--registry", destination.host,
                 "--registry-credentials", f"{basic.host}={basic.secret}"], out=out, err=err)

    assert code == 1
    assert f"copied {basic.host}/team/app:v1 " in out.getvalue()
    assert f"failed {bearer.host}/team/app:v1: " in out.getvalue()

"""ECR login, PTC cache state and upstream registry credentials against moto in server mode."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import boto3
import pytest

from ecr_mirror_cdk.config_parse import parse_config
from lambdas.mirror.aws.connect import connect
from lambdas.mirror.aws.ecr import login, registry_client, registry_credentials
from lambdas.mirror.planning.plan import plan
from tests.support.images import push_image
from tests.support.limiter import SIX_HOURS, Limiter
from tests.support.registry import RegistryServer


def test_login_names_the_account_registry_and_decodes_the_token(aws: str) -> None:
    credentials = login()

    account = boto3.client("sts").get_caller_identity()["Account"]
    assert credentials.host == f"{account}.dkr.ecr.us-east-1.amazonaws.com"
    assert credentials.username == "AWS" and credentials.password
    assert credentials.password not in repr(credentials)


def test_registry_client_speaks_https_to_ecr_with_basic_credentials(aws: str) -> None:
    client, credentials = registry_client(boto3.client("ecr"))

    assert client.base == f"https://{credentials.host}"


@pytest.mark.parametrize(("secret", "expected"), [
    ({"username": "REPLACE_ME", "accessToken": "REPLACE_ME"}, None),
    ({"username": "mirror-bot", "accessToken": "dckr_pat_abc"}, ("mirror-bot", "dckr_pat_abc")),
    ({"username": "mirror-bot"}, None),
])
def test_registry_credentials_come_from_the_secret_unless_it_holds_the_placeholder(
        aws: str, secret: dict[str, str], expected: tuple[str, str] | None) -> None:
    name = f"ecr-pullthroughcache/{uuid.uuid4().hex[:8]}"
    boto3.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps(secret))

    assert registry_credentials(name, registry="ghcr.io") == expected


def test_docker_hub_is_asked_with_the_secret_credentials_so_the_quota_is_the_account_s(
        aws: str, registry_factory: Callable[..., RegistryServer]) -> None:
    hub, destination = registry_factory("hub"), registry_factory("destination")
    push_image(hub.host, "library/python", "3.13-slim", kind="docker-v2")
    name = f"ecr-pullthroughcache/{uuid.uuid4().hex[:8]}"
    boto3.client("secretsmanager").create_secret(
        Name=name, SecretString=json.dumps({"username": "mirror-bot", "accessToken": "dckr_pat_abc"}))
    cfg = parse_config({"images": [{"source": "python", "tags": ["3.13-slim"]}]})

    with Limiter(hub.host, users={"mirror-bot": "dckr_pat_abc"}) as limiter:
        result = plan(cfg, connect(destination.host, upstreams={"docker.io": limiter.host},
                                 credentials={"docker.io": name}))

    assert result.quotas["docker.io"].limit == SIX_HOURS.authenticated

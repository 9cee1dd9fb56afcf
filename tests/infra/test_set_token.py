"""`python -m stacks.set_token` stores the Docker Hub token from stdin; tested against moto in server mode."""

from __future__ import annotations

import io
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stacks.set_token import main
from tests.support.moto import REGION, fake_aws_environment, moto_client, moto_server

from .conftest import REPO

# Shaped like a Docker Hub access token, random per run: it must never show up anywhere.
TOKEN = "dckr_pat_" + secrets.token_urlsafe(24)
SECRET = "ecr-pullthroughcache/docker-hub"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def client(endpoint: str):
    client = moto_client("secretsmanager", endpoint)
    # As the stack leaves it: a placeholder username and a generated token.
    client.create_secret(Name=SECRET, SecretString=json.dumps({"username": "REPLACE_ME", "accessToken": "x"}))
    yield client
    client.delete_secret(SecretId=SECRET, ForceDeleteWithoutRecovery=True)


def stored(client) -> dict[str, str]:
    return json.loads(client.get_secret_value(SecretId=SECRET)["SecretString"])


def test_the_username_and_token_from_stdin_become_the_secret_value(client, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--config", str(REPO / "mirror.yaml")], stdin=io.StringIO(f"alice\n{TOKEN}\n"), client=client)
    assert status == 0
    assert stored(client) == {"username": "alice", "accessToken": TOKEN}
    out = capsys.readouterr()
    assert "alice" in out.out and SECRET in out.out
    assert TOKEN not in out.out + out.err


def test_a_missing_token_stores_nothing(client, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--config", str(REPO / "mirror.yaml")], stdin=io.StringIO("alice\n"), client=client)
    assert status == 1
    assert stored(client)["username"] == "REPLACE_ME"
    assert "second line" in capsys.readouterr().err


def test_a_secret_that_does_not_exist_yet_says_to_deploy_first(
    endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mirror.yaml"
    config.write_text(
        "images:\n  - {source: python, tags: ['3']}\n"
        "docker_hub_credentials: {secret_name: ecr-pullthroughcache/absent}\n"
    )
    client = moto_client("secretsmanager", endpoint)
    status = main(["--config", str(config)], stdin=io.StringIO(f"alice\n{TOKEN}\n"), client=client)
    err = capsys.readouterr().err
    assert status == 1
    assert "ecr-pullthroughcache/absent: ResourceNotFoundException" in err
    assert "deploy the stack first" in err
    assert TOKEN not in err


def test_a_bad_config_fails_before_reading_the_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("images: []\n")
    assert main(["--config", str(config)], stdin=io.StringIO(f"alice\n{TOKEN}\n"), client=object()) == 1
    assert f"{config}: images:" in capsys.readouterr().err


def test_the_command_line_stores_the_token_through_the_default_aws_client(client, endpoint: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stacks.set_token", "--config", "mirror.yaml", "--region", REGION],
        input=f"bob\n{TOKEN}\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        env=fake_aws_environment(endpoint),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert stored(client) == {"username": "bob", "accessToken": TOKEN}
    assert TOKEN not in result.stdout + result.stderr


def test_the_region_comes_from_aws_region_as_it_does_for_cdk_deploy(client, endpoint: str, tmp_path: Path) -> None:
    # boto3 alone reads only AWS_DEFAULT_REGION; the manual says to set AWS_REGION as for deploying.
    env = {k: v for k, v in fake_aws_environment(endpoint).items() if k != "AWS_DEFAULT_REGION"}
    env["AWS_CONFIG_FILE"] = str(tmp_path / "no-config")
    result = subprocess.run(
        [sys.executable, "-m", "stacks.set_token", "--config", "mirror.yaml"],
        input=f"carol\n{TOKEN}\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert stored(client) == {"username": "carol", "accessToken": TOKEN}


def run_set_token(*args: str, env: dict[str, str], stdin: str = f"dave\n{TOKEN}\n") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stacks.set_token", *args], input=stdin, capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=60, check=False)


def no_aws(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment with no AWS settings at all (no region, no credentials, no profile files), plus `extra`."""
    env = {k: v for k, v in fake_aws_environment("http://unused").items() if not k.startswith("AWS_")}
    return {**env, "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_EC2_METADATA_DISABLED": "true", **extra}


def test_without_a_region_it_is_one_line_with_the_fix(tmp_path: Path) -> None:
    result = run_set_token("--config", "mirror.yaml", env=no_aws(tmp_path, AWS_ACCESS_KEY_ID="a",
                                                                 AWS_SECRET_ACCESS_KEY="b"))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: no AWS region: set AWS_REGION (e.g. AWS_REGION=eu-west-1 make docker-hub-token) or a profile with "
        "a region (AWS_PROFILE)"]


def test_a_plain_http_endpoint_that_is_not_loopback_is_refused_before_the_token_is_read(tmp_path: Path) -> None:
    # 192.0.2.2 is TEST-NET-1: if a request were sent, it would hang rather than answer
    env = no_aws(tmp_path, AWS_REGION=REGION, AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="b",
                 AWS_ENDPOINT_URL="http://192.0.2.2:4566")
    result = run_set_token("--config", "mirror.yaml", env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: refusing to send the token over plain HTTP to http://192.0.2.2:4566: use an https endpoint "
        "(unset AWS_ENDPOINT_URL for AWS itself)"]
    assert TOKEN not in result.stdout + result.stderr


def test_the_deploy_check_names_what_to_set(tmp_path: Path) -> None:
    no_credentials = run_set_token("--check", env=no_aws(tmp_path, AWS_REGION=REGION))
    no_region = run_set_token("--check", "make bootstrap", env=no_aws(tmp_path))
    ready = run_set_token("--check", env=no_aws(tmp_path, AWS_REGION=REGION, AWS_ACCESS_KEY_ID="a",
                                                 AWS_SECRET_ACCESS_KEY="b"))

    assert (no_credentials.returncode, no_credentials.stderr) == (
        1, "error: make deploy: no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY\n")
    assert no_region.stderr.startswith("error: make bootstrap: no AWS region: set AWS_REGION (e.g. AWS_REGION=")
    assert (ready.returncode, ready.stderr) == (0, "")


def test_another_registrys_secret_is_created_on_first_use_and_updated_after(
    endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "mirror.yaml"
    config.write_text("images: [{source: ghcr.io/org/app, tags: ['1']}]\n"
                      "registry_credentials: {ghcr.io: ecr-pullthroughcache/ghcr}\n")
    client = moto_client("secretsmanager", endpoint)
    try:
        for user in ("alice", "bob"):
            status = main(["--config", str(config), "--registry", "ghcr.io"],
                          stdin=io.StringIO(f"{user}\n{TOKEN}\n"), client=client)
            assert status == 0
            value = json.loads(client.get_secret_value(SecretId="ecr-pullthroughcache/ghcr")["SecretString"])
            assert value == {"username": user, "accessToken": TOKEN}
        out = capsys.readouterr()
        assert "Stored ghcr.io credentials for bob in ecr-pullthroughcache/ghcr" in out.out
        assert TOKEN not in out.out + out.err
    finally:
        client.delete_secret(SecretId="ecr-pullthroughcache/ghcr", ForceDeleteWithoutRecovery=True)


def test_a_registry_the_config_has_no_secret_for_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--config", str(REPO / "mirror.yaml"), "--registry", "ghcr.io"], stdin=io.StringIO(""),
                  client=object())
    assert status == 1
    assert capsys.readouterr().err == (f"error: {REPO / 'mirror.yaml'}: no secret for ghcr.io: name one under "
                                       "registry_credentials (the config has secrets for docker.io)\n")


def test_the_deploy_check_finds_a_cache_rule_secret_that_is_not_stored_yet(endpoint: str, tmp_path: Path) -> None:
    # ECR's CreatePullThroughCacheRule refuses a missing secret, and the first deploy would roll back.
    config = tmp_path / "mirror.yaml"
    config.write_text("images: [{source: ghcr.io/org/app, tags: ['1']}]\n"
                      "registry_credentials: {ghcr.io: ecr-pullthroughcache/ghcr}\n"
                      "pull_through_cache: [{upstream: docker-hub}, {upstream: github-container-registry}]\n")
    env = fake_aws_environment(endpoint)
    client = moto_client("secretsmanager", endpoint)

    missing = run_set_token("--check", "make deploy", "--secrets", "--config", str(config), env=env)
    main(["--config", str(config), "--registry", "ghcr.io"], stdin=io.StringIO(f"dave\n{TOKEN}\n"), client=client)
    try:
        stored_first = run_set_token("--check", "make deploy", "--secrets", "--config", str(config), env=env)
    finally:
        client.delete_secret(SecretId="ecr-pullthroughcache/ghcr", ForceDeleteWithoutRecovery=True)

    assert (missing.returncode, missing.stderr) == (1, (
        "error: make deploy: the github-container-registry cache rule's secret ecr-pullthroughcache/ghcr does not "
        "exist: store it first: make registry-token REGISTRY=ghcr.io\n"))
    # Docker Hub's secret is the stack's own: not asked for before the first deploy.
    assert (stored_first.returncode, stored_first.stderr) == (0, "")


def test_make_deploy_checks_the_cache_rule_secrets_of_its_config() -> None:
    lines = subprocess.run(["make", "-s", "-n", "-C", str(REPO), "deploy", "CONFIG=other.yaml"], capture_output=True,
                           text=True, check=False, timeout=60).stdout
    assert '-m stacks.set_token --check "make deploy" --secrets --config other.yaml' in lines


def test_an_unknown_profile_is_one_line_naming_it_for_every_command_that_needs_aws(tmp_path: Path) -> None:
    # Given AWS_PROFILE naming a profile no AWS config file defines (boto3 raises ProfileNotFound on Session())
    env = no_aws(tmp_path, AWS_PROFILE="no-such-team")
    says = (f"no AWS profile 'no-such-team' (AWS_PROFILE) in {tmp_path / 'none'} or {tmp_path / 'none'}: name one "
            "that `aws configure list-profiles` shows, or unset AWS_PROFILE")

    # When make deploy, make bootstrap, make docker-hub-token and make registry-token run their first step
    deploy = run_set_token("--check", "make deploy", "--secrets", "--config", "mirror.yaml", env=env)
    bootstrap = run_set_token("--check", "make bootstrap", env=env)
    token = run_set_token("--config", "mirror.yaml", env=env)

    # Then each is one line naming the profile
    assert (deploy.returncode, deploy.stderr) == (1, f"error: make deploy: {says}\n")
    assert (bootstrap.returncode, bootstrap.stderr) == (1, f"error: make bootstrap: {says}\n")
    assert (token.returncode, token.stderr) == (1, f"error: {says}\n")

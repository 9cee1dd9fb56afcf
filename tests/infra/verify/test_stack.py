"""`make verify`'s checks of the stack: deployed, from this config, its cache rules log in, its Docker Hub secret
holds a token (stacks/verify/stack.py)."""

from __future__ import annotations

import json
from pathlib import Path

from ecr_mirror_cdk import constants
from stacks.verify.cli import main
from stacks.verify.stack import SPEC_PARAMETER, STACK_NAME
from tests.support.moto import REGION

from .world import CONFIG, TOKEN, Aws, World, failures, ready


def test_a_stack_that_is_not_deployed_is_the_only_line(aws: Aws, tmp_path: Path, capsys) -> None:
    config = tmp_path / "mirror.yaml"
    config.write_text(CONFIG)
    clients = {"cloudformation": aws("cloudformation")}

    status = main(["--config", str(config)], clients=clients)

    assert status == 1
    assert capsys.readouterr().out.splitlines() == [
        f"FAIL  stack: EcrMirror is not deployed in {REGION}: make deploy (or set AWS_REGION to the stack's region)"]


def test_a_stack_deployed_from_another_config_says_to_deploy_this_one(world: World, capsys) -> None:
    world.client("ssm").put_parameter(Name=SPEC_PARAMETER, Value='{"images": []}', Type="String", Overwrite=True)
    ready(world)

    status, lines = world.run(capsys=capsys)

    assert status == 1
    assert failures(lines) == [f"FAIL  stack: EcrMirror in {REGION} runs another config than {world.config_path} "
                               f"({SPEC_PARAMETER} differs): make deploy CONFIG={world.config_path}"]


def test_a_cache_rule_that_cannot_log_in_names_the_rule_the_reason_and_the_token_to_store(world, capsys) -> None:
    ready(world, rule=(False, "Invalid credentials for the upstream registry"))

    status, lines = world.run(capsys=capsys)

    assert status == 1
    assert failures(lines) == [
        "FAIL  cache rules: docker-hub cannot log in to registry-1.docker.io with ecr-pullthroughcache/docker-hub: "
        "Invalid credentials for the upstream registry: store a valid token with make docker-hub-token"]


def test_the_placeholder_secret_says_to_store_a_token(world: World, capsys) -> None:
    world.client("secretsmanager").put_secret_value(
        SecretId="ecr-pullthroughcache/docker-hub", SecretString=json.dumps({"username": "REPLACE_ME",
                                                                             "accessToken": TOKEN}))
    ready(world)

    status, lines = world.run(capsys=capsys)

    assert status == 1
    assert failures(lines) == ["FAIL  Docker Hub token: ecr-pullthroughcache/docker-hub holds no token yet "
                               "(the placeholder REPLACE_ME): make docker-hub-token"]


def test_the_checker_looks_for_the_stack_and_spec_the_app_deploys() -> None:
    assert (STACK_NAME, SPEC_PARAMETER) == (constants.STACK_NAME, constants.PARAMETER_SPEC)

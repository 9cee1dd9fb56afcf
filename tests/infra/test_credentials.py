"""The Docker Hub secret: created without a value, or referenced; never a value in the template."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from aws_cdk.assertions import Match

from .conftest import Synthesized
from .test_set_token import TOKEN


def test_the_secret_is_created_with_a_placeholder_username_and_a_generated_token(default_app: Synthesized) -> None:
    default_app.template.has_resource(
        "AWS::SecretsManager::Secret",
        {
            "Properties": {
                "Name": "ecr-pullthroughcache/docker-hub",
                "GenerateSecretString": {
                    "SecretStringTemplate": json.dumps({"username": "REPLACE_ME"}),
                    "GenerateStringKey": "accessToken",
                },
                "SecretString": Match.absent(),
            },
            # The stored token survives a stack deletion, but a rolled-back first create leaves no secret
            # whose fixed name would make the retry fail.
            "DeletionPolicy": "RetainExceptOnCreate",
            "UpdateReplacePolicy": "Retain",
        },
    )


def keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from keys(item)


def test_no_resource_or_output_carries_a_secret_value(default_app: Synthesized, variant_app: Synthesized) -> None:
    for app in (default_app, variant_app):
        assert "SecretString" not in set(keys(app.data))
        text = json.dumps(app.data)
        assert TOKEN not in text
        assert not re.search(r"dckr_pat_|accessToken\"\s*:\s*\"", text)
        # Outputs never point at the secret, not even its ARN.
        assert "Secret" not in json.dumps(app.data.get("Outputs", {}))


def test_an_existing_secret_is_referenced_by_name_and_not_created(variant_app: Synthesized) -> None:
    variant_app.template.resource_count_is("AWS::SecretsManager::Secret", 0)
    arn = json.dumps(
        variant_app.template.find_resources(
            "AWS::ECR::PullThroughCacheRule", {"Properties": {"UpstreamRegistry": "docker-hub"}}
        )
    )
    assert ':secret:ecr-pullthroughcache/team-hub"' in arn


def test_the_lambdas_read_the_existing_secret_by_its_name_pattern(variant_app: Synthesized) -> None:
    # A name-referenced secret's ARN ends in a random suffix; the grant must match it.
    for role in ("Sync/PlannerRole", "Sync/CopierRole"):
        policy = variant_app.data["Resources"][variant_app.by_path(f"{role}/DefaultPolicy")]
        text = json.dumps(policy)
        assert ":secret:ecr-pullthroughcache/team-hub-??????" in text


def test_ssm_parameters_named_for_the_build_are_never_created(variant_app: Synthesized) -> None:
    names = {p["Properties"]["Name"] for p in variant_app.template.find_resources("AWS::SSM::Parameter").values()}
    assert not names & {"/CodeBuild/DOCKER_HUB_ID", "/CodeBuild/DOCKER_HUB_PASSWORD"}
    assert all(n.startswith("/ecr-mirror/") for n in names)


def test_the_lambdas_are_told_the_secret_name(default_app: Synthesized, variant_app: Synthesized) -> None:
    for app, name in ((default_app, "ecr-pullthroughcache/docker-hub"), (variant_app, "ecr-pullthroughcache/team-hub")):
        for handler in ("mirror.handlers.planner.handler", "mirror.handlers.copier.handler"):
            app.template.has_resource_properties(
                "AWS::Lambda::Function",
                {
                    "Handler": handler,
                    "Environment": {"Variables": Match.object_like({"MIRROR_DOCKER_HUB_SECRET": name})},
                },
            )

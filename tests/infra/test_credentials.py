"""Upstream secrets: Docker Hub's created without a value, or referenced; every one the Lambdas log in with
readable by both; never a value in the template."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from aws_cdk.assertions import Match, Matcher

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


def test_an_existing_secret_gets_its_complete_arn_into_the_cache_rule_from_describe_secret_at_deploy(
        variant_app: Synthesized) -> None:
    # Given a secret the stack does not create: its ARN's 6-character suffix is unknown at synth
    variant_app.template.resource_count_is("AWS::SecretsManager::Secret", 0)
    [rule] = variant_app.template.find_resources(
        "AWS::ECR::PullThroughCacheRule", {"Properties": {"UpstreamRegistry": "docker-hub"}}).values()

    # Then the rule takes the ARN DescribeSecret returns for that name, which may be described and nothing else
    lookup_id = rule["Properties"]["CredentialArn"]["Fn::GetAtt"][0]
    assert rule["Properties"]["CredentialArn"] == {"Fn::GetAtt": [lookup_id, "ARN"]}
    lookup = variant_app.data["Resources"][lookup_id]
    call = json.loads(lookup["Properties"]["Create"])
    assert (call["service"], call["action"], call["parameters"]) == (
        "SecretsManager", "describeSecret", {"SecretId": "ecr-pullthroughcache/team-hub"})
    described = [st for r in variant_app.data["Resources"].values() if r["Type"] == "AWS::IAM::Policy"
                 for st in r["Properties"]["PolicyDocument"]["Statement"]
                 if st["Action"] == "secretsmanager:DescribeSecret"]
    assert described
    assert {json.dumps(st["Resource"]).rsplit('"', 2)[-2] for st in described} == {
        ":secret:ecr-pullthroughcache/team-hub-??????"} | {
        ":secret:ecr-pullthroughcache/github-??????" for st in described if "github" in json.dumps(st)}


def name_pattern(secret: str) -> Matcher:
    """A name-referenced secret's ARN: the name and the random suffix Secrets Manager appends."""
    return Match.object_like(
        {"Fn::Join": ["", Match.array_with([Match.string_like_regexp(f":secret:{re.escape(secret)}-\\?{{6}}$")])]}
    )


def test_each_lambda_reads_each_upstream_s_secret_by_its_name_pattern(variant_app: Synthesized) -> None:
    # Docker Hub's existing secret, the GitHub rule's and the self-hosted registry's.
    secrets = set(variant_app.config.credential_secrets().values())
    assert secrets == {"ecr-pullthroughcache/team-hub", "ecr-pullthroughcache/github", "team/registry"}
    for role in ("Sync/PlannerRole", "Sync/CopierRole"):
        for secret in secrets:
            variant_app.template.has_resource_properties(
                "AWS::IAM::Policy",
                {
                    "Roles": [{"Ref": variant_app.by_path(role)}],
                    "PolicyDocument": {
                        "Statement": Match.array_with(
                            [
                                Match.object_like(
                                    {
                                        "Action": Match.array_with(["secretsmanager:GetSecretValue"]),
                                        "Resource": Match.array_with([name_pattern(secret)]),
                                    }
                                )
                            ]
                        )
                    },
                },
            )


def test_ssm_parameters_named_for_the_build_are_never_created(variant_app: Synthesized) -> None:
    names = {p["Properties"]["Name"] for p in variant_app.template.find_resources("AWS::SSM::Parameter").values()}
    assert not names & {"/CodeBuild/DOCKER_HUB_ID", "/CodeBuild/DOCKER_HUB_PASSWORD"}
    assert all(n.startswith("/ecr-mirror/") for n in names)


def test_both_lambdas_are_told_each_registry_s_secret_in_one_json_map(
    default_app: Synthesized, variant_app: Synthesized
) -> None:
    expected = (
        (default_app, {"docker.io": "ecr-pullthroughcache/docker-hub"}),
        (
            variant_app,
            {
                "docker.io": "ecr-pullthroughcache/team-hub",
                "ghcr.io": "ecr-pullthroughcache/github",
                "registry.example.com:5000": "team/registry",
            },
        ),
    )
    for app, secrets in expected:
        compact = json.dumps(secrets, separators=(",", ":"), sort_keys=True)
        for handler in ("mirror.handlers.planner.handler", "mirror.handlers.copier.handler"):
            app.template.has_resource_properties(
                "AWS::Lambda::Function",
                {
                    "Handler": handler,
                    "Environment": {
                        "Variables": Match.object_like(
                            {
                                "MIRROR_REGISTRY_CREDENTIALS": compact,
                                "MIRROR_DOCKER_HUB_SECRET": Match.absent(),
                            }
                        )
                    },
                },
            )

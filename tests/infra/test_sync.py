"""Scheduled sync: schedule, Lambdas, queue wiring and each role's permissions."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from aws_cdk import Environment
from aws_cdk.assertions import Match, Template
from aws_lambda_powertools.shared import version as powertools_version

from ecr_mirror_cdk import constants
from ecr_mirror_cdk.config import Config, ConfigError
from ecr_mirror_cdk.contract import direct_repositories
from stacks.mirror_stack import MirrorStack
from tests.support.cdk import cdk_app

from .conftest import REPO, Synthesized

PLANNER = "mirror.handlers.planner.handler"
COPIER = "mirror.handlers.copier.handler"
PULL = {
    "ecr:BatchGetImage",
    "ecr:BatchCheckLayerAvailability",
    "ecr:GetDownloadUrlForLayer",
}
PUSH = {"ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage"}


def statements(app: Synthesized, role_path: str) -> list[tuple[set[str], list[str]]]:
    """(actions, resources as JSON text) of every statement in the role's policies."""
    role = app.by_path(role_path)
    found = []
    for policy in app.template.find_resources("AWS::IAM::Policy").values():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                assert statement["Effect"] == "Allow"
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                resources = (
                    statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                )
                found.append((set(actions), [json.dumps(r, sort_keys=True) for r in resources]))
    return found


def resources_for(app: Synthesized, role_path: str, action: str) -> set[str]:
    return {r for actions, resources in statements(app, role_path) if action in actions for r in resources}


def ref(logical_id: str) -> str:
    return json.dumps({"Ref": logical_id})


def arn(logical_id: str) -> str:
    return json.dumps({"Fn::GetAtt": [logical_id, "Arn"]})


def repository_arn(name: str) -> str:
    """The ARN the stack writes for a repository name (or a `prefix/*` pattern)."""
    return json.dumps({"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":ecr:", {"Ref": "AWS::Region"}, ":",
                                         {"Ref": "AWS::AccountId"}, f":repository/{name}"]]})


def prefix_arn(prefix: str) -> str:
    return repository_arn(f"{prefix}/*")


def mirror_repos(app: Synthesized) -> set[str]:
    """The direct copies: one wildcard under the mirror prefix, each target elsewhere by name."""
    return {repository_arn(name) for name in direct_repositories(app.config)}


def cache_repos(app: Synthesized) -> set[str]:
    return {prefix_arn(rule.prefix) for rule in app.config.pull_through_cache}


def test_the_schedule_from_the_config_invokes_the_planner(default_app: Synthesized, variant_app: Synthesized) -> None:
    for app, expression in ((default_app, "rate(10 minutes)"), (variant_app, "cron(0 3 * * ? *)")):
        planner = app.logical_id("AWS::Lambda::Function", Handler=PLANNER)
        app.template.has_resource_properties(
            "AWS::Events::Rule",
            {
                "ScheduleExpression": expression,
                "State": "ENABLED",
                "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [planner, "Arn"]}})],
            },
        )


def layer_arn(partition: str, account: str, region: str) -> str:
    return f"arn:{partition}:lambda:{region}:{account}:layer:AWSLambdaPowertoolsPythonV3-python313-arm64:27"


def test_both_lambdas_run_python_3_13_on_arm64_with_the_regions_powertools_layer_and_active_tracing(
    default_app: Synthesized,
) -> None:
    [mapping] = default_app.data["Mappings"]
    for handler in (PLANNER, COPIER):
        default_app.template.has_resource_properties(
            "AWS::Lambda::Function",
            {
                "Handler": handler,
                "Runtime": "python3.13",
                "Architectures": ["arm64"],
                "TracingConfig": {"Mode": "Active"},
                "Layers": [{"Fn::FindInMap": [mapping, {"Ref": "AWS::Region"}, "Arn"]}],
                "Environment": {
                    "Variables": Match.object_like(
                        {"POWERTOOLS_SERVICE_NAME": "ecr-mirror", "POWERTOOLS_METRICS_NAMESPACE": "EcrMirror"}
                    )
                },
            },
        )
    table = default_app.data["Mappings"][mapping]
    assert table["eu-west-1"] == {"Arn": layer_arn("aws", "017000801446", "eu-west-1")}
    # Powertools publishes no arm64 layer in ca-west-1, CodeBuild is not in mx-central-1, and ECR has no
    # pull-through cache in China or GovCloud.
    assert not {"ca-west-1", "mx-central-1", "cn-north-1", "us-gov-west-1"} & set(table)
    assert table["ap-southeast-7"] == {"Arn": layer_arn("aws", "017000801446", "ap-southeast-7")}


def region_assertions(template: dict) -> list[dict]:
    """The template rules' assertions about AWS::Region (CDK adds its own bootstrap-version rule)."""
    assertions = [a for rule in template.get("Rules", {}).values() for a in rule["Assertions"]]
    return [a for a in assertions if '"AWS::Region"' in json.dumps(a)]


def test_an_environment_agnostic_template_refuses_a_region_without_the_layer_before_creating_anything(
    default_app: Synthesized,
) -> None:
    [assertion] = region_assertions(default_app.data)
    regions, region = assertion["Assert"]["Fn::Contains"]
    assert region == {"Ref": "AWS::Region"}
    assert sorted(regions) == sorted(next(iter(default_app.data["Mappings"].values())))
    assert "stacks/regions.py" in assertion["AssertDescription"]


def region_stack(config: Config, region: str) -> MirrorStack:
    return MirrorStack(cdk_app(), "EcrMirror", config=config, env=Environment(region=region))


def test_a_known_region_gets_its_layer_arn_literally(default_app: Synthesized) -> None:
    template = Template.from_stack(region_stack(default_app.config, "eu-central-2"))
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {"Handler": COPIER, "Layers": [layer_arn("aws", "017000801446", "eu-central-2")]},
    )
    assert region_assertions(template.to_json()) == []
    assert "Mappings" not in template.to_json()


def test_a_region_without_the_arm64_layer_fails_synth_with_one_line_naming_it(default_app: Synthesized) -> None:
    with pytest.raises(ConfigError, match=r"^region ca-west-1: no Powertools .* layer is published there") as err:
        region_stack(default_app.config, "ca-west-1")
    assert "\n" not in str(err.value)


def test_china_takes_the_layer_from_its_own_account_and_refuses_pull_through_cache(default_app: Synthesized) -> None:
    with pytest.raises(ConfigError, match=r"^region cn-north-1: ECR pull-through cache is not available"):
        region_stack(default_app.config, "cn-north-1")
    direct_only = replace(default_app.config, pull_through_cache=())
    template = Template.from_stack(region_stack(direct_only, "cn-north-1"))
    template.has_resource_properties(
        "AWS::Lambda::Function", {"Handler": PLANNER, "Layers": [layer_arn("aws-cn", "498634801083", "cn-north-1")]}
    )


def test_the_tests_run_the_powertools_version_the_layer_holds() -> None:
    pinned = re.search(r"^aws-lambda-powertools\S*==(\S+)$", (REPO / "requirements-dev.txt").read_text(), re.M)
    assert pinned and pinned.group(1) == constants.POWERTOOLS_VERSION
    assert powertools_version.VERSION == constants.POWERTOOLS_VERSION


def test_the_planner_reserves_no_concurrency_unless_asked_and_a_failed_run_is_kept_after_two_retries(
        default_app: Synthesized) -> None:
    app = default_app
    planner, failures = app.by_path("Sync/Planner"), app.by_path("Sync/PlannerFailures")
    assert "ReservedConcurrentExecutions" not in app.data["Resources"][planner]["Properties"]
    app.template.has_resource_properties(
        "AWS::Lambda::EventInvokeConfig",
        {
            "FunctionName": {"Ref": planner},
            "MaximumRetryAttempts": 2,
            "MaximumEventAgeInSeconds": 3600,
            "DestinationConfig": {"OnFailure": {"Destination": {"Fn::GetAtt": [failures, "Arn"]}}},
        },
    )
    app.template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "Targets": [
                Match.object_like(
                    {
                        "Arn": {"Fn::GetAtt": [planner, "Arn"]},
                        "RetryPolicy": {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600},
                        "DeadLetterConfig": {"Arn": {"Fn::GetAtt": [failures, "Arn"]}},
                    }
                )
            ]
        },
    )
    assert resources_for(app, "Sync/PlannerRole", "sqs:SendMessage") == {arn(app.by_path("Sync/Queue")), arn(failures)}
    assert app.data["Resources"][failures]["Properties"]["SqsManagedSseEnabled"] is True


def test_each_lambda_logs_to_its_own_log_group_with_retention(default_app: Synthesized) -> None:
    for name in ("Planner", "Copier"):
        logs = default_app.by_path(f"Sync/{name}Logs")
        assert default_app.data["Resources"][logs]["Properties"]["RetentionInDays"] == 30
        function = default_app.data["Resources"][default_app.by_path(f"Sync/{name}")]["Properties"]
        assert function["LoggingConfig"] == {"LogGroup": {"Ref": logs}}


def test_both_lambdas_are_given_the_queue_url(default_app: Synthesized) -> None:
    queue = default_app.by_path("Sync/Queue")
    for handler in (PLANNER, COPIER):
        default_app.template.has_resource_properties(
            "AWS::Lambda::Function",
            {"Handler": handler, "Environment": {"Variables": Match.object_like({"MIRROR_QUEUE_URL": {"Ref": queue}})}},
        )


def test_the_copier_drains_the_queue_with_partial_batch_failures_and_bounded_concurrency(
    default_app: Synthesized, variant_app: Synthesized
) -> None:
    for app in (default_app, variant_app):
        copier = app.logical_id("AWS::Lambda::Function", Handler=COPIER)
        app.template.has_resource_properties(
            "AWS::Lambda::EventSourceMapping",
            {
                "FunctionName": {"Ref": copier},
                "EventSourceArn": {"Fn::GetAtt": [app.by_path("Sync/Queue"), "Arn"]},
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
                "ScalingConfig": {"MaximumConcurrency": app.config.sync.max_concurrency},
            },
        )


def test_failed_messages_go_to_the_dead_letter_queue_after_three_receives(default_app: Synthesized) -> None:
    queue = default_app.data["Resources"][default_app.by_path("Sync/Queue")]["Properties"]
    dlq = default_app.by_path("Sync/DeadLetterQueue")
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq, "Arn"]}, "maxReceiveCount": 3}
    copier = default_app.data["Resources"][default_app.by_path("Sync/Copier")]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * copier["Timeout"]


def test_both_queues_are_encrypted_and_refuse_plain_http(default_app: Synthesized) -> None:
    for path in ("Sync/Queue", "Sync/DeadLetterQueue"):
        queue = default_app.by_path(path)
        assert default_app.data["Resources"][queue]["Properties"]["SqsManagedSseEnabled"] is True
        default_app.template.has_resource_properties(
            "AWS::SQS::QueuePolicy",
            {
                "Queues": [{"Ref": queue}],
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                    )
                },
            },
        )


def test_lambda_roles_carry_no_managed_policies(default_app: Synthesized) -> None:
    for path in ("Sync/PlannerRole", "Sync/CopierRole"):
        role = default_app.data["Resources"][default_app.by_path(path)]["Properties"]
        assert "ManagedPolicyArns" not in role


def test_account_wide_resources_are_only_for_actions_without_resource_level_permissions(
    default_app: Synthesized,
) -> None:
    for path in ("Sync/PlannerRole", "Sync/CopierRole"):
        wide = set().union(*(actions for actions, resources in statements(default_app, path) if '"*"' in resources))
        assert wide == {"ecr:GetAuthorizationToken", "xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def test_the_planner_reads_ecr_and_the_spec_and_fills_the_queue(default_app: Synthesized) -> None:
    app, role = default_app, "Sync/PlannerRole"
    assert resources_for(app, role, "ecr:BatchGetImage") == mirror_repos(app)
    assert arn(app.by_path("Sync/Queue")) in resources_for(app, role, "sqs:SendMessage")
    assert resources_for(app, role, "secretsmanager:GetSecretValue") == {
        ref(app.logical_id("AWS::SecretsManager::Secret"))
    }
    spec = app.logical_id("AWS::SSM::Parameter", Name="/ecr-mirror/spec")
    state = app.logical_id("AWS::SSM::Parameter", Name="/ecr-mirror/state/pending-changes")
    spec_arn, state_arn = sorted(resources_for(app, role, "ssm:GetParameter"), key=lambda a: ref(state) in a)
    assert ref(spec) in spec_arn and ref(state) in state_arn
    [written] = resources_for(app, role, "ssm:PutParameter")
    assert ref(state) in written
    granted = set().union(*(actions for actions, _ in statements(app, role)))
    assert not granted & (PUSH | {"ecr:BatchImportUpstreamImage", "ecr:CreateRepository", "sqs:ReceiveMessage"})


def test_the_copier_pulls_and_pushes_the_mirrored_repos_and_never_touches_a_cache_prefix(
        default_app: Synthesized) -> None:
    app, role = default_app, "Sync/CopierRole"
    # ecr:CreateRepository: its first push creates the repository from the mirror prefix's creation template.
    for action in PUSH | PULL | {"ecr:CreateRepository"}:
        assert resources_for(app, role, action) == mirror_repos(app)
    granted = set().union(*(actions for actions, _ in statements(app, role)))
    assert not granted & {"ecr:BatchImportUpstreamImage", "ecr:DescribeImages"}
    assert resources_for(app, role, "sqs:ReceiveMessage") == {arn(app.by_path("Sync/Queue"))}
    # A throttled or unstarted task goes back to the queue as a new message.
    assert resources_for(app, role, "sqs:SendMessage") == {arn(app.by_path("Sync/Queue"))}
    assert resources_for(app, role, "ssm:GetParameter") == set()
    assert resources_for(app, role, "secretsmanager:GetSecretValue") == {
        ref(app.logical_id("AWS::SecretsManager::Secret"))
    }


def test_each_role_writes_only_its_own_log_group(default_app: Synthesized) -> None:
    for name in ("Planner", "Copier"):
        assert resources_for(default_app, f"Sync/{name}Role", "logs:PutLogEvents") == {
            arn(default_app.by_path(f"Sync/{name}Logs"))
        }

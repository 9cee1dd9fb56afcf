"""Scheduled sync: schedule, Lambdas, queue wiring and each role's permissions."""

from __future__ import annotations

import json

from aws_cdk.assertions import Match

from .conftest import Synthesized

PLANNER = "mirror.handlers.planner.handler"
COPIER = "mirror.handlers.copier.handler"
PULL = {
    "ecr:DescribeImages",
    "ecr:ListImages",
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


def prefix_arn(prefix: str) -> str:
    return json.dumps(
        {
            "Fn::Join": [
                "",
                [
                    "arn:",
                    {"Ref": "AWS::Partition"},
                    ":ecr:",
                    {"Ref": "AWS::Region"},
                    ":",
                    {"Ref": "AWS::AccountId"},
                    f":repository/{prefix}/*",
                ],
            ]
        },
        sort_keys=True,
    )


def mirror_repos(app: Synthesized) -> set[str]:
    return {
        arn(app.logical_id("AWS::ECR::Repository", RepositoryName=i.repository))
        for i in app.config.images
        if i.via is None
    }


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


def test_both_lambdas_run_python_3_13_on_arm64_with_powertools_and_active_tracing(default_app: Synthesized) -> None:
    for handler in (PLANNER, COPIER):
        default_app.template.has_resource_properties(
            "AWS::Lambda::Function",
            {
                "Handler": handler,
                "Runtime": "python3.13",
                "Architectures": ["arm64"],
                "TracingConfig": {"Mode": "Active"},
                "Layers": [
                    {
                        "Fn::Sub": Match.string_like_regexp(
                            r"^arn:\$\{AWS::Partition\}:lambda:\$\{AWS::Region\}:017000801446:layer:"
                            r"AWSLambdaPowertoolsPythonV3-python313-arm64:\d+$"
                        )
                    }
                ],
                "Environment": {
                    "Variables": Match.object_like(
                        {"POWERTOOLS_SERVICE_NAME": "ecr-mirror", "POWERTOOLS_METRICS_NAMESPACE": "EcrMirror"}
                    )
                },
            },
        )


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
    for action in ("ecr:DescribeImages", "ecr:ListImages", "ecr:BatchGetImage"):
        assert resources_for(app, role, action) == mirror_repos(app) | cache_repos(app)
    assert resources_for(app, role, "sqs:SendMessage") == {arn(app.by_path("Sync/Queue"))}
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


def test_the_copier_pushes_mirrored_repos_and_pulls_through_the_cache_prefixes(default_app: Synthesized) -> None:
    app, role = default_app, "Sync/CopierRole"
    for action in PUSH - {"ecr:PutImage"}:
        assert resources_for(app, role, action) == mirror_repos(app)
    for action in PULL:
        assert resources_for(app, role, action) == mirror_repos(app) | cache_repos(app)
    for action in ("ecr:BatchImportUpstreamImage", "ecr:CreateRepository"):
        assert resources_for(app, role, action) == cache_repos(app)
    assert resources_for(app, role, "sqs:ReceiveMessage") == {arn(app.by_path("Sync/Queue"))}
    assert resources_for(app, role, "sqs:SendMessage") == set()
    assert resources_for(app, role, "ssm:GetParameter") == set()
    assert resources_for(app, role, "secretsmanager:GetSecretValue") == {
        ref(app.logical_id("AWS::SecretsManager::Secret"))
    }


def test_the_copier_moves_tags_in_the_cache_prefixes_with_put_image_and_uploads_no_layers_there(
    default_app: Synthesized,
) -> None:
    # ECR refreshes a cached tag up to 24 h late; the copier PUTs the warmed digest as the tag.
    app, role = default_app, "Sync/CopierRole"
    assert resources_for(app, role, "ecr:PutImage") == mirror_repos(app) | cache_repos(app)
    for action in PUSH - {"ecr:PutImage"}:
        assert not resources_for(app, role, action) & cache_repos(app)


def test_each_role_writes_only_its_own_log_group(default_app: Synthesized) -> None:
    for name in ("Planner", "Copier"):
        assert resources_for(default_app, f"Sync/{name}Role", "logs:PutLogEvents") == {
            arn(default_app.by_path(f"Sync/{name}Logs"))
        }

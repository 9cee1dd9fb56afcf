"""Alarms, their topic, the dashboard and the stack outputs."""

from __future__ import annotations

import json

from aws_cdk.assertions import Capture, Match

from .conftest import Synthesized


def alarm_topic(app: Synthesized) -> dict:
    return {"Ref": app.by_path("Observability/Alarms")}


def test_a_message_in_the_dead_letter_queue_raises_an_alarm(default_app: Synthesized) -> None:
    dlq = default_app.by_path("Sync/DeadLetterQueue")
    default_app.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "AWS/SQS",
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq, "QueueName"]}}],
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": 0,
            "TreatMissingData": "notBreaching",
            "AlarmActions": [alarm_topic(default_app)],
        },
    )


def test_a_copier_error_raises_an_alarm(default_app: Synthesized) -> None:
    copier = default_app.by_path("Sync/Copier")
    default_app.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "AWS/Lambda",
            "MetricName": "Errors",
            "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": copier}}],
            "Statistic": "Sum",
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": 0,
            "AlarmActions": [alarm_topic(default_app)],
        },
    )


def test_docker_hub_quota_below_the_reserve_raises_an_alarm(default_app: Synthesized, variant_app: Synthesized) -> None:
    for app in (default_app, variant_app):
        app.template.has_resource_properties(
            "AWS::CloudWatch::Alarm",
            {
                "Namespace": "EcrMirror",
                "MetricName": "DockerHubQuotaRemaining",
                "Dimensions": [{"Name": "service", "Value": "ecr-mirror"}],
                "Statistic": "Minimum",
                "ComparisonOperator": "LessThanThreshold",
                "Threshold": app.config.sync.quota_reserve,
                # No Docker Hub traffic in a period is not a low quota.
                "TreatMissingData": "notBreaching",
                "AlarmActions": [alarm_topic(app)],
            },
        )


# Without `verify`; an image with it adds UnverifiedImages (tests/infra/test_signature_config.py).
ALARMS = ("DeadLetters", "CopierErrors", "PlannerErrors", "ScheduleFailedInvocations", "DockerHubQuotaLow")


def alarm_arn(name: str) -> dict:
    return {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":cloudwatch:", {"Ref": "AWS::Region"}, ":",
                              {"Ref": "AWS::AccountId"}, f":alarm:{name}"]]}


def assert_only_these_alarms(app: Synthesized, condition: dict, alarms: tuple[str, ...] = ALARMS) -> None:
    """The conditions limit CloudWatch to this stack's alarms (every one of them) in this account."""
    names = {a["Properties"]["AlarmName"] for a in app.template.find_resources("AWS::CloudWatch::Alarm").values()}
    assert names == {f"EcrMirror-{alarm}" for alarm in alarms}
    assert condition["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    arns = condition["ArnLike"]["aws:SourceArn"]
    assert sorted(map(json.dumps, arns)) == sorted(json.dumps(alarm_arn(n)) for n in names)
    assert set(condition) == {"StringEquals", "ArnLike"}


def test_every_alarm_publishes_to_the_topic_when_it_fires_and_when_it_clears(default_app: Synthesized) -> None:
    for alarm in default_app.template.find_resources("AWS::CloudWatch::Alarm").values():
        assert alarm["Properties"]["AlarmActions"] == [alarm_topic(default_app)]
        assert alarm["Properties"]["OKActions"] == [alarm_topic(default_app)]


def test_cloudwatch_may_publish_to_the_topic_only_for_the_stacks_alarms(default_app: Synthesized) -> None:
    # enforce_ssl writes a topic policy, which replaces SNS's default one: without this Allow no alarm arrives.
    condition = Capture()
    default_app.template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "Topics": [alarm_topic(default_app)],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        {
                            "Sid": "AllowMirrorAlarmsToPublish",
                            "Effect": "Allow",
                            "Principal": {"Service": "cloudwatch.amazonaws.com"},
                            "Action": "sns:Publish",
                            "Resource": alarm_topic(default_app),
                            "Condition": condition,
                        }
                    ]
                )
            },
        },
    )
    assert_only_these_alarms(default_app, condition.as_object())


def test_the_alarm_topic_is_encrypted_with_a_rotated_key_cloudwatch_may_use_for_the_stacks_alarms(
    default_app: Synthesized,
) -> None:
    key, condition = default_app.by_path("Observability/TopicKey"), Capture()
    default_app.template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": {"Fn::GetAtt": [key, "Arn"]}})
    statements = default_app.data["Resources"][key]["Properties"]["KeyPolicy"]["Statement"]
    cloudwatch = [s for s in statements if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    assert len(cloudwatch) == 1, "one statement, with conditions; no unconditioned grant besides it"
    default_app.template.has_resource_properties(
        "AWS::KMS::Key",
        {
            "EnableKeyRotation": True,
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [
                        {
                            "Sid": "AllowMirrorAlarmsToEncrypt",
                            "Effect": "Allow",
                            "Principal": {"Service": "cloudwatch.amazonaws.com"},
                            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                            "Resource": "*",
                            "Condition": condition,
                        }
                    ]
                )
            },
        },
    )
    assert_only_these_alarms(default_app, condition.as_object())


def test_a_planner_error_raises_an_alarm(default_app: Synthesized) -> None:
    planner = default_app.by_path("Sync/Planner")
    default_app.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": "EcrMirror-PlannerErrors",
            "Namespace": "AWS/Lambda",
            "MetricName": "Errors",
            "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": planner}}],
            "Statistic": "Sum",
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": 0,
            "TreatMissingData": "notBreaching",
        },
    )


def test_a_schedule_that_cannot_invoke_the_planner_raises_an_alarm(default_app: Synthesized) -> None:
    rule = default_app.by_path("Sync/Schedule")
    default_app.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": "EcrMirror-ScheduleFailedInvocations",
            "Namespace": "AWS/Events",
            "MetricName": "FailedInvocations",
            "Dimensions": [{"Name": "RuleName", "Value": {"Ref": rule}}],
            "Statistic": "Sum",
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": 0,
        },
    )


def test_the_alarm_topic_refuses_plain_http(default_app: Synthesized) -> None:
    default_app.template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "Topics": [alarm_topic(default_app)],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                )
            },
        },
    )


def test_the_dashboard_shows_the_engine_metrics_and_the_alarms(default_app: Synthesized) -> None:
    [dashboard] = default_app.template.find_resources("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for metric in (
        "ImagesCopied",
        "ImagesSkipped",
        "ImagesDeferred",
        "ImagesFailed",
        "BytesCopied",
        "DockerHubQuotaRemaining",
        "ApproximateNumberOfMessagesVisible",
        "Errors",
    ):
        assert f'\\"{metric}\\"' in body, metric
    for alarm in ALARMS:
        assert default_app.by_path(f"Observability/{alarm}") in body


def test_outputs_name_the_registry_the_codebuild_project_and_the_alarm_topic(default_app: Synthesized) -> None:
    default_app.template.has_output(
        "RegistryUri", {"Value": {"Fn::Sub": "${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}"}}
    )
    default_app.template.has_output(
        "CodeBuildProjectName", {"Value": {"Ref": default_app.logical_id("AWS::CodeBuild::Project")}}
    )
    default_app.template.has_output("AlarmTopicArn", {"Value": alarm_topic(default_app)})


def test_outputs_name_the_image_repository_the_dashboard_and_the_dead_letter_queues(default_app: Synthesized) -> None:
    app = default_app
    app.template.has_output(
        "ImageRepositoryUri", {"Value": Match.object_like(
            {"Fn::Join": Match.array_with([Match.array_with([{"Ref": app.by_path("Build/ImageRepository")}])])}
        )}
    )
    app.template.has_output("DashboardName", {"Value": {"Ref": app.by_path("Observability/Dashboard")}})
    app.template.has_output("DeadLetterQueueUrl", {"Value": {"Ref": app.by_path("Sync/DeadLetterQueue")}})
    app.template.has_output("PlannerFailureQueueUrl", {"Value": {"Ref": app.by_path("Sync/PlannerFailures")}})

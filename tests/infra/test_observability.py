"""Alarms, their topic, the dashboard and the stack outputs."""

from __future__ import annotations

import json

from aws_cdk.assertions import Match

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


def test_the_alarm_topic_is_encrypted_with_a_rotated_key_cloudwatch_may_use(default_app: Synthesized) -> None:
    key = default_app.by_path("Observability/TopicKey")
    default_app.template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": {"Fn::GetAtt": [key, "Arn"]}})
    default_app.template.has_resource_properties(
        "AWS::KMS::Key",
        {
            "EnableKeyRotation": True,
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                            }
                        )
                    ]
                )
            },
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
    for alarm in ("DeadLetters", "CopierErrors", "DockerHubQuotaLow"):
        assert default_app.by_path(f"Observability/{alarm}") in body


def test_outputs_name_the_registry_the_codebuild_project_and_the_alarm_topic(default_app: Synthesized) -> None:
    default_app.template.has_output(
        "RegistryUri", {"Value": {"Fn::Sub": "${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}"}}
    )
    default_app.template.has_output(
        "CodeBuildProjectName", {"Value": {"Ref": default_app.logical_id("AWS::CodeBuild::Project")}}
    )
    default_app.template.has_output("AlarmTopicArn", {"Value": alarm_topic(default_app)})

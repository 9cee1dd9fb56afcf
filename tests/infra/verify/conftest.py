"""The fixtures of `make verify`'s tests: one moto server for the package, and a deployed mirror in it per test."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecr_mirror_cdk.config_parse import load_config
from stacks.verify.stack import SPEC_PARAMETER, STACK_NAME
from tests.support.moto import moto_server

from .world import BUILD_LOGS, CONFIG, PLANNER, PRESENT, PROJECT, TOKEN, Aws, Partly, World, post


@pytest.fixture(scope="package")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        # Lambda without Docker: an invoke answers with the next queued result (moto's lambda-simple backend).
        post(f"{url}/moto-api/config", {"lambda": {"use_docker": False}})
        try:
            yield url
        finally:
            post(f"{url}/moto-api/config", {"lambda": {"use_docker": True}})


@pytest.fixture(scope="package")
def aws(endpoint: str) -> Aws:
    return Aws(endpoint)


@pytest.fixture
def world(endpoint: str, aws: Aws, tmp_path: Path) -> Iterator[World]:
    """A deployed mirror as `make deploy` and a first sync leave it, in moto."""
    config_path = tmp_path / "mirror.yaml"
    config_path.write_text(CONFIG)
    config = load_config(config_path)
    c = aws
    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}, "Outputs": {
        "RegistryUri": {"Value": "123456789012.dkr.ecr.us-east-1.amazonaws.com"},
        "AlarmTopicArn": {"Value": {"Ref": "Topic"}},
        "CodeBuildProjectName": {"Value": PROJECT},
        "PlannerFunctionName": {"Value": PLANNER},
        "DeadLetterQueueUrl": {"Value": "https://sqs.us-east-1.amazonaws.com/123456789012/dlq"},
    }}
    c("cloudformation").create_stack(StackName=STACK_NAME, TemplateBody=json.dumps(template))
    outputs = c("cloudformation").describe_stacks(StackName=STACK_NAME)["Stacks"][0]["Outputs"]
    topic = next(o["OutputValue"] for o in outputs if o["OutputKey"] == "AlarmTopicArn")
    c("ssm").put_parameter(Name=SPEC_PARAMETER, Value=config.to_spec(), Type="String")
    c("secretsmanager").create_secret(Name=config.docker_hub_credentials.secret_name,
                                      SecretString=json.dumps({"username": "alice", "accessToken": TOKEN}))
    role = c("iam").create_role(RoleName="planner", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("planner.py", "def handler(event, context):\n    return {}\n")
    c("lambda").create_function(FunctionName=PLANNER, Runtime="python3.13", Role=role, Handler="planner.handler",
                                Code={"ZipFile": code.getvalue()})
    for alarm in ("EcrMirror-PlannerErrors", "EcrMirror-DeadLetters"):
        c("cloudwatch").put_metric_alarm(AlarmName=alarm, MetricName="m", Namespace="n", Statistic="Sum", Period=300,
                                         EvaluationPeriods=1, Threshold=0, ComparisonOperator="GreaterThanThreshold",
                                         AlarmActions=[topic], OKActions=[topic])
    # A real alarm already in ALARM is left alone: the test alarm is another one's.
    c("cloudwatch").set_alarm_state(AlarmName="EcrMirror-PlannerErrors", StateValue="ALARM", StateReason="real")
    c("sns").subscribe(TopicArn=topic, Protocol="email", Endpoint="ops@example.com")
    c("logs").create_log_group(logGroupName=BUILD_LOGS[0])
    c("logs").create_log_stream(logGroupName=BUILD_LOGS[0], logStreamName=BUILD_LOGS[1])
    codebuild = Partly(aws, "codebuild", {"batch_get_projects", "start_build", "batch_get_builds"})
    world = World(endpoint, aws, config_path, config, topic, tmp_path,
                  ecr=Partly(aws, "ecr", {"validate_pull_through_cache_rule"}),
                  cloudwatch=Partly(aws, "cloudwatch", {"describe_alarm_history"}),
                  codebuild=codebuild, lambda_=c("lambda"))
    for image in config.images:
        c("ecr").create_repository(repositoryName=image.repository)
        for tag in PRESENT[image.source]:
            world.put_tag(image.source, tag)
    try:
        yield world
    finally:
        post(f"{endpoint}/moto-api/reset", {})

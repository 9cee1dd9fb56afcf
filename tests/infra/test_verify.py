"""`make verify` against a deployed mirror: moto in server mode holds the account, botocore's Stubber answers
the calls moto does not implement (ValidatePullThroughCacheRule, DescribeAlarmHistory, CodeBuild builds with
their logs and overrides)."""

from __future__ import annotations

import io
import json
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from ecr_mirror_cdk import constants
from ecr_mirror_cdk.buildspec import BuildSpecOptions, build_spec
from ecr_mirror_cdk.config import Config, load_config
from ecr_mirror_cdk.setup.endpoint import state_files
from ecr_mirror_cdk.setup.report import report
from stacks.verify import COPY_WAIT, SPEC_PARAMETER, STACK_NAME, VERIFY_TAG, Clock, main, with_dockerfile
from tests.support.moto import REGION, moto_server

from .conftest import REPO, Synthesized
from .test_set_token import no_aws

TOKEN = "dckr_pat_" + secrets.token_urlsafe(24)  # must never show up in the output
CONFIG = """\
images:
  - {source: python, tags: ["3.13-slim", "3.12-slim"], platforms: [linux/amd64, linux/arm64]}
  - {source: node, tag_regex: '22\\.\\d+\\.\\d+-bookworm-slim'}
  - {source: gcr.io/distroless/base-debian12, tags: [nonroot]}
pull_through_cache: [{upstream: docker-hub}, {upstream: quay}]
"""
PRESENT = {"python": ["3.13-slim", "3.12-slim"], "node": ["22.11.0-bookworm-slim", "20.1.0"],
           "gcr.io/distroless/base-debian12": ["nonroot"]}
PLANNER = "EcrMirror-Planner"
PROJECT = "mirror-build"
BUILD_ID = f"{PROJECT}:7d3c"
BUILD_LOGS = ("/aws/codebuild/mirror-build", "7d3c")
SUMMARY = {"images": 3, "tags": 4, "skip": 4, "enqueued": 0, "quotas": [], "staleness_seconds": {}}
BUILDSPEC = json.dumps(build_spec(BuildSpecOptions(docker_hub_secret="arn:aws:secretsmanager:x:1:secret:hub")))


def post(url: str, body: Any) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        # Lambda without Docker: an invoke answers with the next queued result (moto's lambda-simple backend).
        post(f"{url}/moto-api/config", {"lambda": {"use_docker": False}})
        try:
            yield url
        finally:
            post(f"{url}/moto-api/config", {"lambda": {"use_docker": True}})


class Aws:
    """boto3 clients for moto from one botocore session (dummy credentials), one per service."""

    def __init__(self, endpoint: str) -> None:
        session = botocore.session.get_session()
        session.set_credentials("testing", "testing")
        self.session = boto3.session.Session(botocore_session=session, region_name=REGION)
        self.endpoint = endpoint
        self.clients: dict[str, Any] = {}

    def __call__(self, service: str) -> Any:
        if service not in self.clients:
            self.clients[service] = self.session.client(service, endpoint_url=self.endpoint)  # type: ignore
        return self.clients[service]

    def stubbed(self, service: str) -> Any:
        """A new client no request leaves: a Stubber answers it."""
        return self.session.client(service, endpoint_url="http://127.0.0.1:9")  # type: ignore


@pytest.fixture(scope="module")
def aws(endpoint: str) -> Aws:
    return Aws(endpoint)


class Partly:
    """A moto client whose `operations` a Stubber answers instead: the calls moto does not implement."""

    def __init__(self, aws: Aws, service: str, operations: set[str]) -> None:
        self.moto, self.operations = aws(service), operations
        self.stubbed = aws.stubbed(service)
        self.stub = Stubber(self.stubbed)
        self.stub.activate()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stubbed if name in self.operations else self.moto, name)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.on_sleep: list[Any] = []

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        while self.on_sleep:
            self.on_sleep.pop(0)()

    def clock(self) -> Clock:
        return Clock(sleep=self.sleep, now=lambda: self.t)


def report_line(tmp_path: Path, *entries: dict[str, Any]) -> str:
    """The line ecr_mirror_cdk/setup/report.py prints for a build whose endpoint journaled `entries`."""
    pidfile = tmp_path / "endpoint.pid"
    state_files(pidfile)["journal"].write_text("".join(json.dumps(e) + "\n" for e in entries))
    return report(pidfile)


SERVED = {"served": True, "method": "GET", "upstream": "docker.io", "image": "library/python",
          "reference": "3.13-slim", "repository": "docker-hub/library/python"}
FELL_BACK = {"served": False, "method": "GET", "upstream": "docker.io", "image": "library/python",
             "reference": "3.13-slim", "reason": "the mirror holds nothing of docker.io"}


@dataclass
class World:
    endpoint: str
    aws: Aws
    config_path: Path
    config: Config
    topic: str
    tmp_path: Path
    ecr: Partly
    cloudwatch: Partly
    codebuild: Any
    lambda_: Any
    clock: FakeClock = field(default_factory=FakeClock)

    def client(self, service: str) -> Any:
        return self.aws(service)

    def put_tag(self, source: str, tag: str) -> None:
        repository = next(i.repository for i in self.config.images if i.source == source)
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": [],
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": f"sha256:{'a' * 64}", "size": 2}}
        self.client("ecr").put_image(repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=tag)

    def plan_result(self, summary: Any) -> None:
        post(f"{self.endpoint}/moto-api/static/lambda-simple/response",
             {"results": [json.dumps(summary)], "region": REGION})

    def rule_answer(self, valid: bool = True, failure: str = "") -> None:
        answer = {"ecrRepositoryPrefix": "docker-hub", "upstreamRegistryUrl": "registry-1.docker.io",
                  "isValid": valid, **({"failure": failure} if failure else {})}
        self.ecr.stub.add_response("validate_pull_through_cache_rule", answer, {"ecrRepositoryPrefix": "docker-hub"})

    def alarm_action(self, summary: str) -> None:
        history = {"AlarmName": ANY, "HistoryItemType": "Action", "ScanBy": "TimestampDescending", "MaxRecords": 1}
        self.cloudwatch.stub.add_response("describe_alarm_history", {"AlarmHistoryItems": []}, history)
        item = {"AlarmName": "EcrMirror-DeadLetters", "Timestamp": datetime.now(UTC), "HistoryItemType": "Action",
                "HistorySummary": summary}
        self.cloudwatch.stub.add_response("describe_alarm_history", {"AlarmHistoryItems": [item]}, history)

    def build_result(self, line: str, status: str = "SUCCEEDED") -> None:
        stub = self.codebuild.stub
        stub.add_response("batch_get_projects", {"projects": [{"name": PROJECT, "source": {
            "type": "NO_SOURCE", "buildspec": BUILDSPEC}}]}, {"names": [PROJECT]})
        stub.add_response("start_build", {"build": {"id": BUILD_ID, "buildComplete": False,
                                                    "buildStatus": "IN_PROGRESS"}}, {
            "projectName": PROJECT,
            "buildspecOverride": with_dockerfile(BUILDSPEC, "FROM python:3.13-slim"),
            "environmentVariablesOverride": [
                {"name": "IMAGE_TAG", "value": VERIFY_TAG, "type": "PLAINTEXT"},
                {"name": "TAG_LATEST", "value": "false", "type": "PLAINTEXT"},
                {"name": "CONTEXT_DIR", "value": ".", "type": "PLAINTEXT"},
            ]})
        phases = [{"phaseType": "BUILD", "phaseStatus": "FAILED" if status == "FAILED" else "SUCCEEDED"}]
        stub.add_response("batch_get_builds", {"builds": [{
            "id": BUILD_ID, "buildComplete": True, "buildStatus": status, "phases": phases,
            "logs": {"groupName": BUILD_LOGS[0], "streamName": BUILD_LOGS[1], "deepLink": "https://console/x"}}]},
            {"ids": [BUILD_ID]})
        logs = self.client("logs")
        now = int(time.time() * 1000)
        logs.put_log_events(logGroupName=BUILD_LOGS[0], logStreamName=BUILD_LOGS[1], logEvents=[
            {"timestamp": now, "message": "[Container] Running command python3 setup_mirror.py --report\n"},
            {"timestamp": now + 1, "message": line + "\n"}])

    def run(self, *args: str, capsys: pytest.CaptureFixture[str],
            cloudformation: Any = None) -> tuple[int, list[str]]:
        clients = {s: self.client(s) for s in ("cloudformation", "ssm", "secretsmanager", "sns", "logs")}
        clients |= {"ecr": self.ecr, "cloudwatch": self.cloudwatch, "codebuild": self.codebuild,
                    "lambda": self.lambda_, **({"cloudformation": cloudformation} if cloudformation else {})}
        status = main(["--config", str(self.config_path), *args], clients=clients, clock=self.clock.clock())
        out = capsys.readouterr()
        assert TOKEN not in out.out + out.err
        return status, out.out.splitlines()


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


def ready(world: World, *, summary: Any = SUMMARY, rule: tuple[bool, str] = (True, ""),
          action: str | None = "Successfully executed action {topic}", build: str | None = None) -> None:
    """Queue the answers of an account where everything holds, but for what a test changes."""
    world.plan_result(summary)
    world.rule_answer(*rule)
    if action is not None:
        world.alarm_action(action.format(topic=world.topic))
    if build is not None:
        world.build_result(build)


def failures(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith("OK ")]


def test_a_working_mirror_is_one_ok_line_per_check_and_exit_0(world: World, capsys) -> None:
    ready(world, build=report_line(world.tmp_path, SERVED, {**SERVED, "reference": "sha256:" + "b" * 64}))

    status, lines = world.run("--build", capsys=capsys)

    assert status == 0, lines
    assert [line.split(":")[0] for line in lines] == [
        "OK    stack", "OK    cache rules", "OK    Docker Hub token", "OK    planner", "OK    images",
        "OK    alarm topic", "OK    build"]
    assert lines[1] == "OK    cache rules: docker-hub authenticates to registry-1.docker.io; quay takes no credentials"
    assert lines[2] == "OK    Docker Hub token: ecr-pullthroughcache/docker-hub holds a token for alice"
    assert lines[6].endswith("mirror: 2 manifests served by the mirror (docker.io 2); no request fell back to the "
                             "upstream")
    # The test alarm went to the alarm that was not in ALARM already, and the build got the Dockerfile override.
    alarms = world.client("cloudwatch").describe_alarms(AlarmNames=["EcrMirror-DeadLetters"])["MetricAlarms"]
    assert alarms[0]["StateValue"] == "ALARM"
    assert alarms[0]["StateReason"].startswith("make verify")
    for client in (world.ecr, world.cloudwatch, world.codebuild):
        client.stub.assert_no_pending_responses()


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


def test_a_planner_that_raises_is_its_error_and_where_its_log_is(world: World, capsys) -> None:
    lambda_ = Partly(world.aws, "lambda", {"invoke", "get_function_configuration"})
    error = json.dumps({"errorType": "AttributeError",
                        "errorMessage": "'HTTPResponse' object has no attribute 'json'"}).encode()
    lambda_.stub.add_response("invoke", {"StatusCode": 200, "FunctionError": "Unhandled",
                                         "Payload": StreamingBody(io.BytesIO(error), len(error))},
                              {"FunctionName": PLANNER, "InvocationType": "RequestResponse", "Payload": ANY})
    lambda_.stub.add_response("get_function_configuration", {"LoggingConfig": {"LogGroup": "/mirror/planner"}},
                              {"FunctionName": PLANNER})
    world.lambda_ = lambda_
    ready(world)

    status, lines = world.run(capsys=capsys)

    assert status == 1
    assert failures(lines) == ["FAIL  planner: EcrMirror-Planner failed: AttributeError: 'HTTPResponse' object has "
                               "no attribute 'json': see aws logs tail /mirror/planner --since 15m"]


def test_a_plan_with_failed_tags_fails_and_points_at_the_log(world: World, capsys) -> None:
    ready(world, summary={**SUMMARY, "skip": 3, "failed": 1})

    status, lines = world.run(capsys=capsys)

    assert status == 1
    assert failures(lines) == ["FAIL  planner: 1 of 4 tags failed to plan (each is a 'failed' line in its log): "
                               f"aws logs tail /aws/lambda/{PLANNER} --since 15m"]


def test_copies_the_planner_queued_are_waited_for(world: World, capsys) -> None:
    world.client("ecr").batch_delete_image(repositoryName=world.config.images[0].repository,
                                           imageIds=[{"imageTag": "3.12-slim"}])
    world.clock.on_sleep.append(lambda: world.put_tag("python", "3.12-slim"))  # the copier's work arrives
    ready(world, summary={**SUMMARY, "skip": 3, "copy": 1, "enqueued": 1})

    status, lines = world.run(capsys=capsys)

    assert status == 0, lines
    assert "OK    planner: 3 images, 4 tags: 1 queued for copy, 3 up to date" in lines
    assert 0 < world.clock.t < COPY_WAIT


def test_a_tag_missing_from_ecr_is_named_with_its_repository(world: World, capsys) -> None:
    python = world.config.images[0].repository
    world.client("ecr").batch_delete_image(repositoryName=python, imageIds=[{"imageTag": "3.12-slim"}])
    node = world.config.images[1].repository
    world.client("ecr").batch_delete_image(repositoryName=node, imageIds=[{"imageTag": "22.11.0-bookworm-slim"}])
    ready(world)

    status, lines = world.run(capsys=capsys)

    assert status == 1
    assert failures(lines) == [
        f"FAIL  images: not in ECR: python:3.12-slim ({python}), node ({node}: no tag matching "
        r"'22\.\d+\.\d+-bookworm-slim'): copies may still be running (run make verify again in a few "
        "minutes); failed copies wait in https://sqs.us-east-1.amazonaws.com/123456789012/dlq"]


def test_an_alarm_cloudwatch_could_not_publish_says_which_policy_to_look_at(world: World, capsys) -> None:
    ready(world, action="Failed to execute action {topic}. Received error: \"CloudWatch Alarms does not have "
                        "authorization to access the SNS topic encryption key.\"")

    status, lines = world.run(capsys=capsys)

    assert status == 1
    assert len(failures(lines)) == 1
    assert failures(lines)[0].startswith(f"FAIL  alarm topic: CloudWatch could not publish EcrMirror-DeadLetters to "
                                         f"the topic: Failed to execute action {world.topic}. Received error:")
    assert failures(lines)[0].endswith("the topic's or its KMS key's policy refuses CloudWatch (make deploy "
                                       "restores both)")


def test_a_topic_nobody_subscribed_to_says_how_to_subscribe(world: World, capsys) -> None:
    sns = world.client("sns")
    for subscription in sns.list_subscriptions_by_topic(TopicArn=world.topic)["Subscriptions"]:
        sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])
    ready(world)

    status, lines = world.run(capsys=capsys)

    assert status == 1
    assert failures(lines) == [f"FAIL  alarm topic: CloudWatch publishes to the topic but nobody is subscribed: aws "
                               f"sns subscribe --topic-arn {world.topic} --protocol email --notification-endpoint "
                               "you@example.com"]


def test_a_build_whose_pull_fell_back_to_docker_hub_shows_its_report_line(world: World, capsys) -> None:
    line = report_line(world.tmp_path, FELL_BACK)
    ready(world, build=line)

    status, lines = world.run("--build", capsys=capsys)

    assert status == 1
    assert failures(lines) == [f"FAIL  build: FROM python:3.13-slim: {line}"]
    assert "1 fell back to the upstream: docker.io/library/python:3.13-slim" in line


def test_a_failed_build_names_its_phase_and_log(world: World, capsys) -> None:
    world.plan_result(SUMMARY)
    world.rule_answer()
    world.alarm_action(f"Successfully executed action {world.topic}")
    world.build_result(report_line(world.tmp_path, SERVED), status="FAILED")

    status, lines = world.run("--build", capsys=capsys)

    assert status == 1
    assert failures(lines) == [f"FAIL  build: {BUILD_ID} FAILED in BUILD: mirror: 1 manifests served by the mirror "
                               "(docker.io 1); no request fell back to the upstream; log: https://console/x"]


def test_the_build_override_is_the_projects_buildspec_with_a_dockerfile_written_first(tmp_path: Path) -> None:
    override = json.loads(with_dockerfile(BUILDSPEC, "FROM python:3.13-slim"))
    project = json.loads(BUILDSPEC)
    first, *rest = override["phases"]["install"]["commands"]

    assert rest == project["phases"]["install"]["commands"]
    assert {k: v for k, v in override.items() if k != "phases"} == {k: v for k, v in project.items() if k != "phases"}
    subprocess.run(["bash", "-c", first], cwd=tmp_path, check=True)
    assert (tmp_path / "Dockerfile").read_text() == "FROM python:3.13-slim\n"
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", "-s", "bash", "-"], input=first, text=True, check=True)


def run_verify(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stacks.verify", "--config", "mirror.yaml"], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=60, check=False)


def test_without_aws_settings_it_is_one_line_saying_what_to_set(tmp_path: Path) -> None:
    no_region = run_verify(no_aws(tmp_path, AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="b"))
    no_credentials = run_verify(no_aws(tmp_path, AWS_REGION=REGION))
    unknown_profile = run_verify(no_aws(tmp_path, AWS_PROFILE="nope"))

    assert (no_region.returncode, no_region.stdout) == (1, "")
    assert no_region.stderr.splitlines() == [
        "error: make verify: no AWS region: set AWS_REGION (e.g. AWS_REGION=eu-west-1 make verify) or a profile "
        "with a region (AWS_PROFILE)"]
    assert no_credentials.stderr.splitlines() == [
        "error: make verify: no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"]
    none = tmp_path / "none"
    assert unknown_profile.stderr.splitlines() == [
        f"error: make verify: no AWS profile 'nope' (AWS_PROFILE) in {none} or {none}: name one that "
        "`aws configure list-profiles` shows, or unset AWS_PROFILE"]


def test_make_verify_runs_the_checker_on_its_config_with_its_args() -> None:
    lines = subprocess.run(["make", "-s", "-n", "-C", str(REPO), "verify", "CONFIG=other.yaml", "ARGS=--build"],
                           capture_output=True, text=True, check=False, timeout=60).stdout
    assert "-m stacks.verify --config other.yaml --build" in lines


def test_the_checker_looks_for_the_stack_and_spec_the_app_deploys() -> None:
    assert (STACK_NAME, SPEC_PARAMETER) == (constants.STACK_NAME, constants.PARAMETER_SPEC)


def test_the_stack_names_its_planner_for_make_verify(default_app: Synthesized) -> None:
    default_app.template.has_output("PlannerFunctionName", {"Value": {"Ref": default_app.by_path("Sync/Planner")}})

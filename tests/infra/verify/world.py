"""A deployed mirror in moto for `make verify`'s tests: moto in server mode holds the account, botocore's Stubber
answers the calls moto does not implement (ValidatePullThroughCacheRule, DescribeAlarmHistory, CodeBuild builds
with their logs and overrides). The fixtures that build it are in conftest.py."""

from __future__ import annotations

import json
import secrets
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.stub import ANY, Stubber

from ecr_mirror_cdk.buildspec import BuildSpecOptions, build_spec
from ecr_mirror_cdk.config import Config
from ecr_mirror_cdk.setup.endpoint import state_files
from ecr_mirror_cdk.setup.report import report
from stacks.verify.build import VERIFY_TAG, with_dockerfile
from stacks.verify.cli import main
from stacks.verify.clients import Clock
from tests.support.moto import REGION

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


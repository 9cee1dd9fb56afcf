"""The Lambda handlers end-to-end: a real scheduled event and SQS batch, moto for SSM and SQS,
loopback registries for the images."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from lambdas.mirror.handlers import copier, planner
from lambdas.mirror.handlers.environment import SettingsError
from lambdas.mirror.plan import Task
from lambdas.mirror.registry import RegistryClient
from lambdas.mirror.settings import ENV_QUEUE_URL, ENV_REGISTRY, ENV_SPEC_PARAMETER
from tests.support.faults import FaultProxy
from tests.support.images import push_image
from tests.support.registry import RegistryServer

from .support import config

SCHEDULED_EVENT = {
    "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
    "source": "aws.events", "account": "123456789012", "time": "2026-11-23T18:00:00Z", "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/ecr-mirror-schedule"], "detail": {},
}


@dataclass
class Context:
    function_name: str = "ecr-mirror-planner"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:ecr-mirror-planner"
    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"


@pytest.fixture
def fault_storm() -> Any:
    started: list[FaultProxy] = []

    def start(upstream: str) -> FaultProxy:
        started.append(FaultProxy(upstream).start())
        return started[-1]

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def deployed(aws: str, monkeypatch: pytest.MonkeyPatch,
             registry_factory: Callable[..., RegistryServer]) -> dict[str, Any]:
    """What the stack sets up: the spec in SSM, the queue, the functions' environment."""
    source, destination = registry_factory("source"), registry_factory("destination")
    for tag in ("1.0", "1.1"):
        push_image(source.host, "team/app", tag, seed=len(tag) + ord(tag[-1]))
    push_image(source.host, "team/tool", "2", kind="docker-v2", seed=9)
    spec = config({"source": f"{source.host}/team/app", "tag_regex": r"1\.\d"},
                  {"source": f"{source.host}/team/tool", "tags": ["2"]})
    name = f"/ecr-mirror/{uuid.uuid4().hex}/spec"
    boto3.client("ssm").put_parameter(Name=name, Value=spec.to_json(), Type="String")
    queue_url = boto3.client("sqs").create_queue(QueueName=f"mirror-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    monkeypatch.setenv(ENV_SPEC_PARAMETER, name)
    monkeypatch.setenv(ENV_QUEUE_URL, queue_url)
    monkeypatch.setenv(ENV_REGISTRY, destination.host)
    return {"source": source, "destination": destination, "queue_url": queue_url, "spec": spec}


def receive_all(queue_url: str, visibility: int = 60) -> list[dict[str, Any]]:
    sqs, messages = boto3.client("sqs"), []
    while True:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                    VisibilityTimeout=visibility).get("Messages")
        if not batch:
            return messages
        messages.extend(batch)


def sqs_event(messages: list[dict[str, Any]], arn: str = "arn:aws:sqs:us-east-1:123456789012:mirror") -> dict[str, Any]:
    return {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000",
                       "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1700000000001"},
        "messageAttributes": {}, "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs",
        "eventSourceARN": arn, "awsRegion": "us-east-1",
    } for m in messages]}


def test_planner_sends_one_message_per_image_tag_that_needs_work(deployed: dict[str, Any]) -> None:
    summary = planner.handler(SCHEDULED_EVENT, Context())

    bodies = [Task.from_json(m["Body"]) for m in receive_all(deployed["queue_url"])]
    assert sorted((t.ref.repository, t.tag) for t in bodies) == [("team/app", "1.0"), ("team/app", "1.1"),
                                                               ("team/tool", "2")]
    assert {k: summary[k] for k in ("images", "tags", "copy", "enqueued")} == {
        "images": 2, "tags": 3, "copy": 3, "enqueued": 3}
    assert deployed["source"].manifest_gets() == []


def test_copier_reports_exactly_the_bad_message_as_a_batch_item_failure(
        deployed: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    planner.handler(SCHEDULED_EVENT, Context())
    sqs, queue_url = boto3.client("sqs"), deployed["queue_url"]
    planned = receive_all(queue_url)
    bad = json.dumps({**json.loads(planned[0]["Body"]), "tag": "9.9"})  # a tag the source does not have
    bad_id = sqs.send_message(QueueUrl=queue_url, MessageBody=bad)["MessageId"]
    messages = [*planned[:1], *receive_all(queue_url), *planned[1:]]

    response = copier.handler(sqs_event(messages), Context(function_name="ecr-mirror-copier"))

    assert response == {"batchItemFailures": [{"itemIdentifier": bad_id}]}
    destination = RegistryClient(deployed["destination"].host)
    repositories = {i.source.rsplit("/", 1)[-1]: i.repository for i in deployed["spec"].images}
    assert sorted(destination.list_tags(repositories["app"])) == ["1.0", "1.1"]
    assert destination.list_tags(repositories["tool"]) == ["2"]
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line][-1]
    assert (emf["ImagesCopied"], emf["ImagesFailed"]) == ([1.0, 1.0, 1.0], [1.0]) and emf["BytesCopied"]


def test_a_throttled_copy_returns_to_the_queue_delayed_by_retry_after(
        deployed: dict[str, Any], fault_storm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_QUEUE_URL)  # as the stack deploys the copier: the event names the queue
    storm = fault_storm(deployed["source"].host)
    storm.add("status", "/manifests/", method="*", status=429, times=-1, headers={"Retry-After": "300"})
    throttled = Task(f"{storm.host}/team/app", "1.0", "mirror/throttled/app")
    fine = Task(f"{deployed['source'].host}/team/tool", "2", "mirror/fine/tool")
    sqs, queue_url = boto3.client("sqs"), deployed["queue_url"]
    message_id = sqs.send_message(QueueUrl=queue_url, MessageBody=throttled.to_json())["MessageId"]
    sqs.send_message(QueueUrl=queue_url, MessageBody=fine.to_json())
    messages = receive_all(queue_url, visibility=1)
    arn = boto3.client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]

    response = copier.handler(sqs_event(messages, arn), Context(function_name="ecr-mirror-copier"))

    assert response == {"batchItemFailures": [{"itemIdentifier": message_id}]}
    assert len([s for s in storm.seen if "/manifests/" in s.path]) == 1
    time.sleep(1.5)  # the queue's own timeout (1 s here) has passed; Retry-After (300 s) has not
    assert [m["MessageId"] for m in receive_all(queue_url)] == [m["MessageId"] for m in messages
                                                                 if m["MessageId"] != message_id]


@pytest.mark.filterwarnings("ignore:No application metrics")
def test_planner_names_the_missing_environment_variable(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_SPEC_PARAMETER, raising=False)
    monkeypatch.setenv(ENV_QUEUE_URL, "https://sqs.us-east-1.amazonaws.com/123456789012/q")

    with pytest.raises(SettingsError, match=ENV_SPEC_PARAMETER):
        planner.handler(SCHEDULED_EVENT, Context())

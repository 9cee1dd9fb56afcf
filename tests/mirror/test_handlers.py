"""The Lambda handlers end-to-end: a real scheduled event and SQS batch, moto for SSM and SQS,
loopback registries for the images."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from lambdas.mirror.handlers import copier, planner
from lambdas.mirror.handlers.environment import SettingsError
from lambdas.mirror.oci.registry import RegistryClient
from lambdas.mirror.planning.task import Task
from lambdas.mirror.settings import ENV_QUEUE_URL, ENV_REGISTRY, ENV_REGISTRY_CREDENTIALS, ENV_SPEC_PARAMETER
from tests.engine.checks import skopeo_raw_digest
from tests.support.images import push_image
from tests.support.moto import moto_client
from tests.support.private import USER, basic_registry, bearer_registry
from tests.support.registry import RegistryServer
from tests.support.token_issuer import TokenIssuer

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
    remaining_ms: list[int] = field(default_factory=list)  # one reading per call; then 15 minutes

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms.pop(0) if self.remaining_ms else 15 * 60 * 1000


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
    boto3.client("ssm").put_parameter(Name=name, Value=spec.to_spec(), Type="String")
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


COPIER = Context(function_name="ecr-mirror-copier")


def queue_with_dead_letters(monkeypatch: pytest.MonkeyPatch, max_receive_count: int = 1) -> tuple[str, str, str]:
    """(queue URL, its ARN, dead-letter queue URL): a redrive policy as the stack sets, on moto's SQS;
    the copier is told the queue's URL, as the stack tells it."""
    sqs = boto3.client("sqs")
    dlq = sqs.create_queue(QueueName=f"dlq-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count})
    url = sqs.create_queue(QueueName=f"mirror-{uuid.uuid4().hex[:12]}",
                           Attributes={"RedrivePolicy": redrive})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    monkeypatch.setenv(ENV_QUEUE_URL, url)
    return url, arn, dlq


def receive(queue_url: str, wait: float = 0.0) -> list[dict[str, Any]]:
    """What the event source mapping would hand the copier: every visible message, with its attributes."""
    time.sleep(wait)
    return boto3.client("sqs").receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=1,
        AttributeNames=["ApproximateReceiveCount"], MessageAttributeNames=["All"]).get("Messages", [])


def copy_batch(messages: list[dict[str, Any]], queue_url: str, arn: str, context: Context = COPIER) -> dict[str, Any]:
    """Invoke the copier, then do what Lambda's SQS event source does: delete every message not reported."""
    event = sqs_event(messages, arn)
    for record, message in zip(event["Records"], messages, strict=True):
        record["messageAttributes"] = {k: {"stringValue": v["StringValue"], "dataType": v["DataType"]}
                                       for k, v in message.get("MessageAttributes", {}).items()}
    response = copier.handler(event, context)
    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    for message in messages:
        if message["MessageId"] not in failed:
            boto3.client("sqs").delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return response


def test_a_throttled_copy_waits_retry_after_and_never_counts_toward_the_dead_letter_queue(
        deployed: dict[str, Any], fault_proxies: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    storm = fault_proxies(deployed["source"].host)
    storm.add("status", "/manifests/", method="*", status=429, times=-1, headers={"Retry-After": "2"})
    queue_url, arn, dlq = queue_with_dead_letters(monkeypatch)
    boto3.client("sqs").send_message(QueueUrl=queue_url,
                                     MessageBody=Task(f"{storm.host}/team/app", "1.0", "mirror/t/app").to_json())

    for attempt in range(1, 4):  # three times the queue's maxReceiveCount of one
        [message] = receive(queue_url, wait=0 if attempt == 1 else 2.5)
        assert message["Attributes"]["ApproximateReceiveCount"] == "1"  # a new message each time
        assert copy_batch([message], queue_url, arn) == {"batchItemFailures": []}
        assert receive(queue_url) == []  # hidden for Retry-After, not visible at once
        assert len([s for s in storm.seen if "/manifests/" in s.path]) == attempt

    assert receive(dlq) == []


def test_a_failed_copy_of_a_one_message_batch_is_its_item_failure_and_reaches_the_dead_letter_queue(
        deployed: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # The same harness without the throttle: the redrive policy works, so the test above can fail.
    queue_url, arn, dlq = queue_with_dead_letters(monkeypatch)
    missing = Task(f"{deployed['source'].host}/team/app", "9.9", "mirror/missing/app")  # no such tag
    message_id = boto3.client("sqs").send_message(QueueUrl=queue_url, MessageBody=missing.to_json())["MessageId"]
    [message] = receive(queue_url)

    assert copy_batch([message], queue_url, arn) == {"batchItemFailures": [{"itemIdentifier": message_id}]}
    assert receive(queue_url, wait=1.5) == []
    assert [m["MessageId"] for m in receive(dlq)] == [message_id]


def test_a_copy_left_without_time_is_queued_again_and_finished_ones_are_not_redone(
        deployed: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    queue_url, arn, _ = queue_with_dead_letters(monkeypatch)
    sqs, source = boto3.client("sqs"), deployed["source"]
    tasks = [Task(f"{source.host}/team/app", "1.0", "mirror/late/app"),
             Task(f"{source.host}/team/tool", "2", "mirror/late/tool")]
    for task in tasks:
        sqs.send_message(QueueUrl=queue_url, MessageBody=task.to_json())
    messages = receive(queue_url)
    first = next(m for m in messages if Task.from_json(m["Body"]) == tasks[0])
    # Ten minutes left for the first record, four (under the five-minute reserve) for the second.
    context = Context(function_name="ecr-mirror-copier", remaining_ms=[600_000, 240_000])

    response = copy_batch([first, *[m for m in messages if m is not first]], queue_url, arn, context)

    assert response == {"batchItemFailures": []}
    destination = RegistryClient(deployed["destination"].host)
    assert destination.list_tags("mirror/late/app") == ["1.0"]
    assert source.manifest_gets("team/tool") == []
    [again] = receive(queue_url)
    assert Task.from_json(again["Body"]) == tasks[1] and again["Attributes"]["ApproximateReceiveCount"] == "1"


@pytest.mark.filterwarnings("ignore:No application metrics")
def test_planner_names_the_missing_environment_variable(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_SPEC_PARAMETER, raising=False)
    monkeypatch.setenv(ENV_QUEUE_URL, "https://sqs.us-east-1.amazonaws.com/123456789012/q")

    with pytest.raises(SettingsError, match=ENV_SPEC_PARAMETER):
        planner.handler(SCHEDULED_EVENT, Context())


def test_the_lambdas_copy_private_images_with_the_secrets_the_stack_names(
        aws: str, deployed: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        registry_factory: Callable[..., RegistryServer]) -> None:
    # Given a registry behind htpasswd and one behind a token issuer, each with its secret in the map
    secretsmanager = moto_client("secretsmanager", aws)
    with TokenIssuer(tmp_path / "issuer", anonymous=False) as issuer:
        private = [basic_registry(registry_factory, tmp_path, secretsmanager),
                   bearer_registry(registry_factory, issuer, secretsmanager)]
        digests = {p.kind: push_image(p.host, "team/app", "v1", seed=50 + n, username=USER, password=p.token)
                   for n, p in enumerate(private)}
        spec = config(*({"source": f"{p.host}/team/app", "tags": ["v1"], "target": f"mirror/{p.kind}"}
                        for p in private))
        boto3.client("ssm").put_parameter(Name=os.environ[ENV_SPEC_PARAMETER], Value=spec.to_spec(), Overwrite=True)
        monkeypatch.setenv(ENV_REGISTRY_CREDENTIALS, json.dumps({p.host: p.secret for p in private}))

        # When the planner runs and the copier takes its messages
        planner.handler(SCHEDULED_EVENT, Context())
        response = copier.handler(sqs_event(receive_all(deployed["queue_url"])), COPIER)

    # Then both images are in the destination, digest for digest
    assert response == {"batchItemFailures": []}
    for kind, digest in digests.items():
        assert skopeo_raw_digest(deployed["destination"].host, f"mirror/{kind}", "v1") == digest


@pytest.mark.filterwarnings("ignore:No application metrics")
def test_a_credentials_map_that_is_not_json_names_the_variable(deployed: dict[str, Any],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_REGISTRY_CREDENTIALS, "ghcr.io=team/ghcr")

    with pytest.raises(SettingsError, match=f"^environment variable {ENV_REGISTRY_CREDENTIALS} must be a JSON"):
        planner.handler(SCHEDULED_EVENT, Context())

"""The handlers' jobs with in-memory collaborators: batching to SQS, and a 429 sent back to wait."""

from __future__ import annotations

from typing import Any

import pytest

from lambdas.mirror.aws.queue import NOT_BEFORE, enqueue, queue_url_from_arn
from lambdas.mirror.handlers.jobs import Waits, run_message
from lambdas.mirror.oci.endpoints import Endpoints
from lambdas.mirror.oci.errors import TooManyRequests
from lambdas.mirror.planning.task import Task


class FakeSqs:
    def __init__(self) -> None:
        self.batches: list[list[dict[str, str]]] = []
        self.sent: list[dict[str, Any]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:  # noqa: N803
        self.batches.append(Entries)
        return {"Successful": [{"Id": e["Id"]} for e in Entries]}

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        self.sent.append(kwargs)
        return {"MessageId": str(len(self.sent))}


class Throttled:
    """A source registry that answers every manifest request with 429 and Retry-After."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after, self.calls = retry_after, 0

    def get_manifest(self, repository: str, reference: str) -> Any:
        self.calls += 1
        raise TooManyRequests("429", retry_after=self.retry_after)


def test_tasks_are_sent_in_batches_of_ten() -> None:
    sqs = FakeSqs()
    tasks = [Task("python", f"t{n}", "docker-hub/library/python") for n in range(23)]

    assert enqueue(tasks, "https://queue", sqs=sqs) == 23
    assert [len(b) for b in sqs.batches] == [10, 10, 3]
    assert Task.from_json(sqs.batches[2][2]["MessageBody"]) == tasks[22]


def send_message_body(sqs: FakeSqs, n: int = 0) -> Task:
    return Task.from_json(sqs.sent[n]["MessageBody"])


def test_a_throttled_task_is_sent_again_delayed_by_retry_after_and_does_not_fail() -> None:
    sqs, task = FakeSqs(), Task("quay.io/org/tool", "1", "mirror/quay.io/org/tool")
    endpoints = Endpoints(object(), sources=lambda _: Throttled(90.0))

    result = run_message(task.to_json(), endpoints, queue_url="https://queue", sqs=sqs, clock=lambda: 1000.0)

    assert result["status"] == "deferred"
    [sent] = sqs.sent
    assert (sent["QueueUrl"], sent["DelaySeconds"], sent["MessageAttributes"]) == ("https://queue", 90, {})
    assert send_message_body(sqs) == task


def test_a_wait_beyond_fifteen_minutes_carries_not_before_and_hops_without_a_request() -> None:
    sqs, throttled = FakeSqs(), Throttled(3600.0)
    endpoints = Endpoints(object(), sources=lambda _: throttled)
    body = Task("quay.io/org/tool", "1", "mirror/quay.io/org/tool").to_json()

    run_message(body, endpoints, queue_url="https://q", sqs=sqs, clock=lambda: 1000.0)
    attribute = sqs.sent[0]["MessageAttributes"][NOT_BEFORE]
    assert (sqs.sent[0]["DelaySeconds"], attribute) == (900, {"DataType": "Number", "StringValue": "4600"})

    # Received again 15 minutes later: still too early, so it hops on without touching the upstream.
    result = run_message(body, endpoints, queue_url="https://q", not_before=4600.0, sqs=sqs, clock=lambda: 1900.0)
    assert result["status"] == "waiting" and throttled.calls == 1
    assert (sqs.sent[1]["DelaySeconds"], sqs.sent[1]["MessageAttributes"]) == (900, {NOT_BEFORE: attribute})


def test_later_tasks_for_a_throttled_upstream_wait_without_a_request() -> None:
    sqs, throttled, waits = FakeSqs(), Throttled(120.0), Waits()
    endpoints = Endpoints(object(), sources=lambda _: throttled)
    for tag in ("1", "2"):
        body = Task("quay.io/org/tool", tag, "mirror/quay.io/org/tool").to_json()
        run_message(body, endpoints, queue_url="https://q", waits=waits, sqs=sqs, clock=lambda: 50.0)

    assert throttled.calls == 1
    assert [(send_message_body(sqs, n).tag, m["DelaySeconds"]) for n, m in enumerate(sqs.sent)] == [
        ("1", 120), ("2", 120)]


def test_a_throttled_task_fails_the_message_when_it_cannot_be_sent_again() -> None:
    # Never lost: the original message stays and returns after its visibility timeout.
    endpoints = Endpoints(object(), sources=lambda _: Throttled(60.0))
    body = Task("quay.io/org/tool", "1", "mirror/quay.io/org/tool").to_json()

    with pytest.raises(RuntimeError, match="no queue"):
        run_message(body, endpoints, queue_url=None, sqs=FakeSqs())


def test_the_queue_url_follows_from_the_event_source_arn() -> None:
    assert queue_url_from_arn("arn:aws:sqs:eu-west-1:123456789012:EcrMirror-Queue") == (
        "https://sqs.eu-west-1.amazonaws.com/123456789012/EcrMirror-Queue")
    assert queue_url_from_arn("arn:aws:sns:eu-west-1:123456789012:topic") is None


def test_a_task_an_earlier_version_queued_as_a_cache_warm_is_dropped_not_retried() -> None:
    # Given a message the old warm-by-digest path queued (its destination a cache repository)
    sqs, source = FakeSqs(), Throttled(1.0)
    body = '{"source": "python", "tag": "3.13-slim", "repository": "docker-hub/library/python", "via": "docker-hub"}'

    # When the copier receives it
    result = run_message(body, Endpoints(object(), sources=lambda _: source), queue_url="https://q", sqs=sqs)

    # Then it is done with, without a request or a new message: the next plan queues a direct copy
    assert result == {"status": "superseded"}
    assert (source.calls, sqs.sent) == (0, [])

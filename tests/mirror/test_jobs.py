"""The handlers' jobs with in-memory collaborators: batching to SQS, and a 429's Retry-After."""

from __future__ import annotations

from typing import Any

import pytest

from lambdas.mirror.endpoints import Endpoints
from lambdas.mirror.errors import TooManyRequests
from lambdas.mirror.jobs import enqueue, queue_url_from_arn, run_message
from lambdas.mirror.plan import Task


class FakeSqs:
    def __init__(self) -> None:
        self.batches: list[list[dict[str, str]]] = []
        self.visibility: list[dict[str, Any]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:  # noqa: N803
        self.batches.append(Entries)
        return {"Successful": [{"Id": e["Id"]} for e in Entries]}

    def change_message_visibility(self, **kwargs: Any) -> None:
        self.visibility.append(kwargs)


class Throttled:
    def get_manifest(self, repository: str, reference: str) -> Any:
        raise TooManyRequests("429", retry_after=90.0)


def test_tasks_are_sent_in_batches_of_ten() -> None:
    sqs = FakeSqs()
    tasks = [Task("python", f"t{n}", "docker-hub/library/python") for n in range(23)]

    assert enqueue(tasks, "https://queue", sqs=sqs) == 23
    assert [len(b) for b in sqs.batches] == [10, 10, 3]
    assert Task.from_json(sqs.batches[2][2]["MessageBody"]) == tasks[22]


def test_a_throttled_task_is_hidden_for_retry_after_then_fails_the_message() -> None:
    sqs = FakeSqs()
    endpoints = Endpoints(object(), sources=lambda _: Throttled())

    with pytest.raises(TooManyRequests):
        run_message(Task("quay.io/org/tool", "1", "mirror/quay.io/org/tool").to_json(), endpoints,
                    receipt_handle="rh-1", queue_url="https://queue", sqs=sqs)

    assert sqs.visibility == [{"QueueUrl": "https://queue", "ReceiptHandle": "rh-1", "VisibilityTimeout": 91}]


def test_the_queue_url_follows_from_the_event_source_arn() -> None:
    assert queue_url_from_arn("arn:aws:sqs:eu-west-1:123456789012:EcrMirror-Queue") == (
        "https://sqs.eu-west-1.amazonaws.com/123456789012/EcrMirror-Queue")
    assert queue_url_from_arn("arn:aws:sns:eu-west-1:123456789012:topic") is None

"""SQS: the planner queues one message per task; a throttled task goes back as a new message, hidden until
its upstream's wait is over."""

from __future__ import annotations

from collections.abc import Sequence
from math import ceil
from typing import Any

from ..planning.task import Task

SQS_BATCH = 10  # SendMessageBatch takes at most 10 entries
MAX_DELAY = 900  # SQS's ceiling for a message's DelaySeconds (15 minutes)
NOT_BEFORE = "NotBefore"  # message attribute: epoch seconds before which the task must not run


def _sqs(sqs: Any) -> Any:
    if sqs is not None:
        return sqs
    import boto3

    return boto3.client("sqs")


def queue_url_from_arn(arn: str) -> str | None:
    """`arn:aws:sqs:us-east-1:123456789012:name` -> its queue URL (the copier's event names the queue)."""
    parts = arn.split(":")
    if len(parts) != 6 or parts[2] != "sqs":
        return None
    suffix = "amazonaws.com.cn" if parts[1] == "aws-cn" else "amazonaws.com"
    return f"https://sqs.{parts[3]}.{suffix}/{parts[4]}/{parts[5]}"


def enqueue(tasks: Sequence[Task], queue_url: str, *, sqs: Any = None) -> int:
    """One message per task, sent ten at a time; raises if SQS refused any."""
    client = _sqs(sqs)
    for start in range(0, len(tasks), SQS_BATCH):
        batch = tasks[start:start + SQS_BATCH]
        entries = [{"Id": str(n), "MessageBody": task.to_json()} for n, task in enumerate(batch)]
        failed = client.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed") or []
        if failed:
            first = batch[int(failed[0]["Id"])]
            raise RuntimeError(f"SQS refused {len(failed)} message(s), first {first.ref}: {failed[0].get('Message')}")
    return len(tasks)


def requeue(body: str, queue_url: str | None, *, not_before: float, now: float, sqs: Any = None) -> None:
    """Send the task again as a new message (receive count zero), hidden until `not_before`.

    SQS delays a message at most 15 minutes; a longer wait also carries NOT_BEFORE, and the copier
    sends it on again without running it until that time. Raises if SQS refuses, so the original
    message stays and returns after the queue's visibility timeout instead of being lost.
    """
    if not queue_url:
        raise RuntimeError("no queue to send the task back to; the message returns after its visibility timeout")
    wait = max(0, ceil(not_before - now))
    attributes = {}
    if wait > MAX_DELAY:
        attributes[NOT_BEFORE] = {"DataType": "Number", "StringValue": str(ceil(not_before))}
    _sqs(sqs).send_message(QueueUrl=queue_url, MessageBody=body, DelaySeconds=min(wait, MAX_DELAY),
                           MessageAttributes=attributes)

"""The scheduled mirror's two jobs, behind the handlers: plan and enqueue; run one queued task."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from .config import parse_config
from .endpoints import Endpoints
from .errors import TooManyRequests
from .observability import logger, record_copy, record_failure, record_plan
from .plan import Task, plan
from .staleness import ParameterState, track
from .sync import run_task

SQS_BATCH = 10  # SendMessageBatch takes at most 10 entries
MAX_VISIBILITY = 12 * 3600  # SQS's ceiling for a visibility timeout


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


def plan_and_enqueue(spec: str, endpoints: Endpoints, queue_url: str, *, origin: str = "mirror spec",
                     sqs: Any = None, state: ParameterState | None = None) -> dict[str, Any]:
    """Parse the spec (the JSON the stack stored), plan with HEADs only, queue what needs copying.
    `state` remembers when each pending change was first seen, for the staleness metric."""
    config = parse_config(json.loads(spec), origin=origin)
    result = plan(config, endpoints)
    sent = enqueue(result.tasks(), queue_url, sqs=sqs)
    seen = state.load() if state else {}
    pending, staleness = track(result, seen, time.time())
    if state:
        state.save(seen, pending)
    record_plan(result, staleness)
    summary = {"images": len(config.images), "tags": len(result.items), **result.counts(), "enqueued": sent,
               "quotas": [q.as_dict() for q in result.quotas.values()],
               "staleness_seconds": {registry: round(age) for registry, age in staleness.items()}}
    logger.info("planned", extra=summary)
    return summary


def run_message(body: str, endpoints: Endpoints, *, receipt_handle: str | None = None,
                queue_url: str | None = None, sqs: Any = None, workers: int = 4) -> dict[str, Any]:
    """Run the task in one SQS message; raising makes the message a batch item failure."""
    task = Task.from_json(body)
    logger.append_keys(image=task.source, tag=task.tag)
    try:
        outcome = run_task(task, endpoints, workers=workers)
    except TooManyRequests as err:
        record_failure(deferred=True)
        if err.retry_after and queue_url and receipt_handle:
            _delay(queue_url, receipt_handle, err.retry_after, sqs)
        logger.warning(f"throttled copying {task.ref}; back on the queue", extra={"retry_after": err.retry_after})
        raise
    except Exception:
        record_failure(deferred=False)
        logger.exception(f"failed copying {task.ref}")
        raise
    record_copy(outcome.bytes_copied)
    return outcome.as_dict()


def _delay(queue_url: str, receipt_handle: str, seconds: float, sqs: Any) -> None:
    """Honour Retry-After: the message stays invisible that long instead of the queue's default."""
    try:
        _sqs(sqs).change_message_visibility(QueueUrl=queue_url, ReceiptHandle=receipt_handle,
                                            VisibilityTimeout=min(int(seconds) + 1, MAX_VISIBILITY))
    except Exception as err:  # noqa: BLE001 - the message still returns, after the queue's own timeout
        logger.warning(f"could not delay the message by Retry-After: {err}")

"""The scheduled mirror's two jobs, behind the handlers: plan and enqueue; run one queued task (or send it
back to the queue to wait)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import ceil
from typing import Any

from ecr_mirror_cdk.config import parse_spec

from .endpoints import Endpoints
from .errors import SupersededTask, TooManyRequests
from .observability import logger, record_copy, record_failure, record_plan, record_referrers
from .plan import Task, plan
from .signatures import MEMO_PREFIX, Checker, Keys
from .staleness import ParameterState, track
from .sync import run_task

SQS_BATCH = 10  # SendMessageBatch takes at most 10 entries
MAX_DELAY = 900  # SQS's ceiling for a message's DelaySeconds (15 minutes)
NOT_BEFORE = "NotBefore"  # message attribute: epoch seconds before which the task must not run
DEFAULT_RETRY_AFTER = 900.0  # a 429 without Retry-After: try again in 15 minutes


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
    config = parse_spec(spec, origin=origin)
    saved = state.load() if state else {}
    # The state also remembers digests found unsigned, so a held tag costs no GET at the next runs.
    unsigned = {key: when for key, when in saved.items() if key.startswith(MEMO_PREFIX)}
    now = time.time()
    checker = Checker(Keys(), floor=config.sync.quota_reserve, remembered=unsigned, now=now)
    result = plan(config, endpoints, checker=checker)
    sent = enqueue(result.tasks(), queue_url, sqs=sqs)
    seen = {key: when for key, when in saved.items() if key not in unsigned}
    pending, staleness = track(result, seen, now)
    if state:
        state.save(saved, {**pending, **result.unsigned})
    record_plan(result, staleness)
    summary = {"images": len(config.images), "tags": len(result.items), **result.counts(), "enqueued": sent,
               "quotas": [q.as_dict() for q in result.quotas.values()],
               "staleness_seconds": {registry: round(age) for registry, age in staleness.items()}}
    logger.info("planned", extra=summary)
    return summary


@dataclass
class Waits:
    """Per copier invocation: upstreams that answered 429, and until when (epoch seconds)."""

    until: dict[str, float] = field(default_factory=dict)


def run_message(body: str, endpoints: Endpoints, *, queue_url: str | None, not_before: float | None = None,
                waits: Waits | None = None, sqs: Any = None, workers: int = 4,
                clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Run the task in one SQS message; raising makes the message a batch item failure.

    A throttled task is not a failure: it is sent again as a new message, hidden until the upstream's
    Retry-After has passed, and this one is deleted (returned as a success). SQS counts every receive
    toward maxReceiveCount and ChangeMessageVisibility does not undo that, so only a new message keeps a
    wait from counting toward the dead-letter queue. Every later task for that upstream in the same batch
    waits the same way without a request.
    """
    try:
        task = Task.from_json(body)
    except SupersededTask as err:  # queued by an earlier version; retrying it would only fill the dead-letter queue
        logger.warning(f"dropped a queued task: {err}")
        return {"status": "superseded"}
    logger.append_keys(image=task.source, tag=task.tag)
    now = clock()
    if not_before is not None and not_before > now:
        requeue(body, queue_url, not_before=not_before, now=now, sqs=sqs)
        return {"image": task.source, "tag": task.tag, "status": "waiting", "not_before": not_before}
    waits = waits if waits is not None else Waits()
    registry = task.ref.registry
    if registry in waits.until:
        return _defer(task, body, queue_url, waits.until[registry], now, sqs, "upstream answered 429 earlier")
    try:
        outcome = run_task(task, endpoints, workers=workers)
    except TooManyRequests as err:
        waits.until[registry] = now + (err.retry_after if err.retry_after is not None else DEFAULT_RETRY_AFTER)
        return _defer(task, body, queue_url, waits.until[registry], now, sqs, str(err))
    except Exception:
        record_failure(deferred=False)
        logger.exception(f"failed copying {task.ref}")
        raise
    if outcome.status != "referrers":
        record_copy(outcome.bytes_copied)
    if outcome.referrers is not None:
        record_referrers(outcome.referrers)
    return outcome.as_dict()


def _defer(task: Task, body: str, queue_url: str | None, until: float, now: float, sqs: Any,
           reason: str) -> dict[str, Any]:
    requeue(body, queue_url, not_before=until, now=now, sqs=sqs)
    record_failure(deferred=True)
    logger.warning(f"throttled copying {task.ref}; queued again",
                   extra={"retry_in": round(until - now), "error": reason})
    return {"image": task.source, "tag": task.tag, "status": "deferred", "retry_in": round(until - now)}


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

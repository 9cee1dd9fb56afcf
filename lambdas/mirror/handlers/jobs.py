"""The scheduled mirror's two jobs, behind the handlers: plan and enqueue; run one queued task (or send it
back to the queue to wait)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ecr_mirror_cdk.config_parse import parse_spec

from ..aws.observability import logger, record_copy, record_failure, record_plan, record_referrers
from ..aws.queue import enqueue, requeue
from ..aws.state import ParameterState
from ..oci.endpoints import Endpoints
from ..oci.errors import TooManyRequests
from ..planning.plan import plan
from ..planning.signatures import MEMO_PREFIX, Checker, Keys
from ..planning.staleness import track
from ..planning.sync import run_task
from ..planning.task import SupersededTask, Task

DEFAULT_RETRY_AFTER = 900.0  # a 429 without Retry-After: try again in 15 minutes


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

"""Run planned tasks: copy each image/tag directly into its destination repository.

A 429 is not retried here: the task fails with `Throttled` carrying the server's Retry-After, so
the SQS message returns to the queue (the copier delays it by that much) or the CLI reports it as
deferred. Every other task of that upstream in the same run is deferred without a request.

A task with `referrers` copies what refers to the image's manifests before its tags move
(oci/copy_referrers.py); one with `referrers_only` copies only those of its digest (status "referrers").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..oci.endpoints import Endpoints
from ..oci.errors import QuotaReserved, TooManyRequests
from ..settings import SERVICE_NAME
from .task import Task

if TYPE_CHECKING:
    from ..oci.blobs import Progress  # the engine itself is imported when a task runs
    from ..oci.copy_referrers import ReferrersResult

logger = logging.getLogger(SERVICE_NAME)  # formatted by Powertools in the Lambdas (plan.py says why)
# An outcome that did not handle referrers (off, or nothing was copied), in ReferrersResult.as_dict's keys.
_NO_REFERRERS: dict[str, Any] = {"referrers": None, "referrers_found": None, "referrers_failed": (),
                                 "referrers_deferred": ""}


@dataclass(frozen=True)
class Outcome:
    task: Task
    status: str  # copied | referrers (only the referrers) | skipped (already copied) | deferred | failed
    source_digest: str | None = None
    destination_digest: str | None = None
    bytes_copied: int = 0
    blobs_copied: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    manifests_put: int = 0
    seconds: float = 0.0
    error: str = ""
    retry_after: float | None = None
    referrers: ReferrersResult | None = None

    def as_dict(self) -> dict[str, Any]:
        """One schema for every outcome (and every item of the CLI's `sync --json`)."""
        task = self.task
        return {
            "image": task.source, "tag": task.tag, "source": str(task.ref), "repository": task.repository,
            "status": self.status,
            "source_digest": self.source_digest or task.source_digest,
            "destination_digest": self.destination_digest, "bytes": self.bytes_copied,
            "blobs_copied": self.blobs_copied, "blobs_skipped": self.blobs_skipped,
            "blobs_mounted": self.blobs_mounted, "manifests_put": self.manifests_put,
            "seconds": round(self.seconds, 3), "error": self.error,
            "retry_after": round(self.retry_after) if self.retry_after is not None else None,
            **(self.referrers.as_dict() if self.referrers is not None else _NO_REFERRERS),
        }

    def per_tag(self) -> list[Outcome]:
        """This outcome for each tag of its task: the first carries the transfer's figures, the tags
        that shared its digest only their status and digests."""
        first = replace(self, task=replace(self.task, also=()))
        return [first, *(replace(self, task=replace(self.task, tag=tag, also=(), destination_digest=digest),
                                 bytes_copied=0, blobs_copied=0, blobs_skipped=0, blobs_mounted=0,
                                 manifests_put=0, seconds=0.0, referrers=None) for tag, digest in self.task.also)]


def run_task(task: Task, endpoints: Endpoints, *, workers: int = 4, progress: Progress | None = None) -> Outcome:
    """Copy one image/tag directly. Raises TooManyRequests (and any other engine error) to the caller.

    A task whose destination tag already holds the planned source digest is skipped with one free GET at the
    destination and no request upstream: a second planner run that queued the same work, or SQS's
    at-least-once delivery, costs nothing at the source.
    """
    from ..oci.copy import copy_image, recorded_source_digest
    from ..oci.copy_referrers import copy_referrers

    ref = task.ref
    started = time.monotonic()
    source = endpoints.source(ref.registry)
    found: list[ReferrersResult] = []

    def referrers(subjects: Sequence[str]) -> None:
        found.append(copy_referrers(source, ref.repository, endpoints.destination, task.repository, subjects,
                                    floor=task.reserve, mount_from=task.mount_from, workers=workers))

    if task.referrers_only and task.source_digest:
        referrers([task.source_digest])
        outcome = Outcome(task, "referrers", task.source_digest, task.destination_digest,
                          seconds=time.monotonic() - started, referrers=found[0])
        logger.info(f"referrers of {ref}", extra=outcome.as_dict())
        return outcome
    if task.source_digest and not task.also and _already_copied(task, endpoints, recorded_source_digest):
        outcome = Outcome(task, "skipped", task.source_digest, None, seconds=time.monotonic() - started)
        logger.info(f"already copied {ref}", extra=outcome.as_dict())
        return outcome
    # Tags that shared the planned digest get exactly it: fetched once, by digest. So does a tag the planner
    # verified a signature for: the tag moves to the digest that was signed, never to what the tag moved to since.
    reference = task.source_digest if (task.also or task.verified) and task.source_digest else task.tag
    result = copy_image(source, ref.repository, endpoints.destination, task.repository,
                        reference, tags=task.tags, platforms=task.platforms, mount_from=task.mount_from,
                        workers=workers, progress=progress, floor=task.reserve,
                        before_tags=referrers if task.referrers else None)
    outcome = Outcome(
        task, "copied", result.source_digest, result.destination_digest, result.bytes_copied, result.blobs_copied,
        result.blobs_skipped, result.blobs_mounted, result.manifests_put, time.monotonic() - started,
        referrers=found[0] if found else None,
    )
    if task.source_digest and result.source_digest != task.source_digest:
        logger.info("source tag moved since planning; copied the newer image", extra=outcome.as_dict())
    logger.info(f"copied {ref}", extra=outcome.as_dict())
    return outcome


def _already_copied(task: Task, endpoints: Endpoints, recorded: Callable[..., str | None]) -> bool:
    head = endpoints.destination.head_manifest(task.repository, task.tag)
    if head is None or head.digest == task.destination_digest:
        return False  # still as planned: the copy has not happened yet
    if head.digest == task.source_digest:
        return True
    return bool(task.platforms) and recorded(endpoints.destination, task.repository, task.tag,
                                             platforms=task.platforms) == task.source_digest


def run_tasks(tasks: Sequence[Task], endpoints: Endpoints, *, workers: int = 4,
              progress: Callable[[Task], Progress | None] | None = None,
              done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run tasks one after another (each copies its blobs concurrently); never raises for a task."""
    throttled: dict[str, tuple[str, float | None]] = {}
    outcomes = []
    for task in tasks:
        registry = task.ref.registry
        if registry in throttled:
            why, retry_after = throttled[registry]
            outcome = Outcome(task, "deferred", error=f"{why} earlier in this run", retry_after=retry_after)
        else:
            started = time.monotonic()
            try:
                outcome = run_task(task, endpoints, workers=workers, progress=progress(task) if progress else None)
            except TooManyRequests as err:
                why = "quota reserve reached" if isinstance(err, QuotaReserved) else "upstream answered 429"
                throttled[registry] = (why, err.retry_after)
                outcome = Outcome(task, "deferred", error=str(err), retry_after=err.retry_after,
                                  seconds=time.monotonic() - started)
            except Exception as err:  # noqa: BLE001 - one bad image must not stop the others
                outcome = Outcome(task, "failed", error=f"{type(err).__name__}: {err}",
                                  seconds=time.monotonic() - started)
                logger.warning(f"failed {task.ref}", extra=outcome.as_dict())
        outcomes.append(outcome)
        if done:
            done(outcome)
    return outcomes

"""Powertools Logger, Metrics and Tracer: created once here, imported everywhere else.

The logic modules only log; metrics are recorded by the handlers from the results the logic
returns, so the CLI (which never flushes EMF) does not accumulate metrics it would print.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from .reference import DOCKER_HUB
from .settings import (
    METRIC_BYTES,
    METRIC_COPIED,
    METRIC_DEFERRED,
    METRIC_FAILED,
    METRIC_QUOTA_REMAINING,
    METRIC_SKIPPED,
    METRICS_NAMESPACE,
    SERVICE_NAME,
)

if TYPE_CHECKING:
    from .plan import Plan

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)
tracer = Tracer(service=SERVICE_NAME)


def record_plan(plan: Plan) -> None:
    """Counts of the plan's actions, and the Docker Hub quota its HEADs reported."""
    counts = plan.counts()
    metrics.add_metric(name=METRIC_SKIPPED, unit=MetricUnit.Count, value=counts.get("skip", 0))
    metrics.add_metric(name=METRIC_DEFERRED, unit=MetricUnit.Count, value=counts.get("deferred", 0))
    metrics.add_metric(name=METRIC_FAILED, unit=MetricUnit.Count, value=counts.get("failed", 0))
    quota = plan.quotas.get(DOCKER_HUB)
    if quota is not None:
        metrics.add_metric(name=METRIC_QUOTA_REMAINING, unit=MetricUnit.Count, value=quota.remaining)


def record_copy(bytes_copied: int) -> None:
    metrics.add_metric(name=METRIC_COPIED, unit=MetricUnit.Count, value=1)
    metrics.add_metric(name=METRIC_BYTES, unit=MetricUnit.Bytes, value=bytes_copied)


def record_failure(*, deferred: bool) -> None:
    metrics.add_metric(name=METRIC_DEFERRED if deferred else METRIC_FAILED, unit=MetricUnit.Count, value=1)

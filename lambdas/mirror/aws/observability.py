"""Powertools Logger, Metrics and Tracer: created once here, imported everywhere else.

The logic modules only log; metrics are recorded by the handlers from the results the logic
returns, so the CLI (which never flushes EMF) does not accumulate metrics it would print.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from ecr_mirror_cdk.reference import DOCKER_HUB

from ..settings import (
    DIMENSION_UPSTREAM,
    METRIC_BYTES,
    METRIC_COPIED,
    METRIC_DEFERRED,
    METRIC_FAILED,
    METRIC_QUOTA_REMAINING,
    METRIC_REFERRERS_COPIED,
    METRIC_REFERRERS_FAILED,
    METRIC_SKIPPED,
    METRIC_UNVERIFIED,
    METRIC_UPSTREAM_DEFERRED,
    METRIC_UPSTREAM_QUOTA,
    METRIC_UPSTREAM_STALENESS,
    METRICS_NAMESPACE,
    SERVICE_NAME,
)

if TYPE_CHECKING:
    from ..oci.copy_referrers import ReferrersResult
    from ..planning.task import Plan

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)
tracer = Tracer(service=SERVICE_NAME)


def record_plan(plan: Plan, staleness: Mapping[str, float] | None = None) -> None:
    """Counts of the plan's actions (tags held unsigned among them), the Docker Hub quota its HEADs reported,
    and per upstream registry: quota left, images deferred, and `staleness` (oldest pending change, seconds)."""
    counts = plan.counts()
    metrics.add_metric(name=METRIC_SKIPPED, unit=MetricUnit.Count, value=counts.get("skip", 0))
    metrics.add_metric(name=METRIC_DEFERRED, unit=MetricUnit.Count, value=counts.get("deferred", 0))
    metrics.add_metric(name=METRIC_FAILED, unit=MetricUnit.Count, value=counts.get("failed", 0))
    metrics.add_metric(name=METRIC_UNVERIFIED, unit=MetricUnit.Count, value=counts.get("unverified", 0))
    quota = plan.quotas.get(DOCKER_HUB)
    if quota is not None:
        metrics.add_metric(name=METRIC_QUOTA_REMAINING, unit=MetricUnit.Count, value=quota.remaining)
    deferred = Counter(item.task.ref.registry for item in plan.items if str(item.action) == "deferred")
    ages = dict(staleness or {})
    for registry in sorted({item.task.ref.registry for item in plan.items} | set(ages)):
        _per_upstream(registry, METRIC_UPSTREAM_DEFERRED, MetricUnit.Count, deferred.get(registry, 0))
        _per_upstream(registry, METRIC_UPSTREAM_STALENESS, MetricUnit.Seconds, ages.get(registry, 0.0))
        if registry in plan.quotas:
            _per_upstream(registry, METRIC_UPSTREAM_QUOTA, MetricUnit.Count, plan.quotas[registry].remaining)


def _per_upstream(registry: str, name: str, unit: MetricUnit, value: float) -> None:
    """One EMF line with the `upstream` dimension: the handler's metric set shares one dimension set."""
    with single_metric(name=name, unit=unit, value=value, namespace=METRICS_NAMESPACE,
                       default_dimensions={"service": SERVICE_NAME}) as metric:
        metric.add_dimension(name=DIMENSION_UPSTREAM, value=registry)


def record_copy(bytes_copied: int) -> None:
    metrics.add_metric(name=METRIC_COPIED, unit=MetricUnit.Count, value=1)
    metrics.add_metric(name=METRIC_BYTES, unit=MetricUnit.Bytes, value=bytes_copied)


def record_referrers(result: ReferrersResult) -> None:
    """What one copy did with the image's referrers: copied, and refused by the destination (each
    refusal is also a warning in the log, with the registry's answer)."""
    metrics.add_metric(name=METRIC_REFERRERS_COPIED, unit=MetricUnit.Count, value=result.copied)
    metrics.add_metric(name=METRIC_REFERRERS_FAILED, unit=MetricUnit.Count, value=len(result.failed))


def record_failure(*, deferred: bool) -> None:
    metrics.add_metric(name=METRIC_DEFERRED if deferred else METRIC_FAILED, unit=MetricUnit.Count, value=1)

"""The pull-quota budget: what each copy costs in manifest GETs at its upstream, and which copies wait for a
later run so that the plan keeps `sync.quota_reserve` of the upstream's rate limit."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..oci.manifests import INDEX_TYPES
from .task import Action, PlanItem, Quota, digest_key

# An unfiltered index nobody has copied yet: assume an official-image-sized one, ~8 platforms
# each with its attestation manifest. Pessimistic on purpose: the budget may only delay work.
DEFAULT_INDEX_CHILDREN = 16
# A selected platform costs its image manifest and, for buildx images, its attestation manifest.
CHILDREN_PER_PLATFORM = 2


@dataclass(frozen=True)
class Probe:
    """What the HEADs found for one image/tag, before the budget is applied."""

    item: PlanItem
    remaining: int | None = None
    limit: int | None = None


def share_digests(items: Sequence[PlanItem]) -> list[PlanItem]:
    """A copy of a digest another copy of this run already fetches costs nothing more."""
    first: dict[tuple[Any, ...], PlanItem] = {}
    out = []
    for item in items:
        if item.action is Action.COPY and item.task.source_digest:
            leader = first.setdefault(digest_key(item.task), item)
            if leader is not item:
                item = replace(item, task=replace(item.task, cost=0, referrers_cost=0),
                               reason=f"{item.reason}; same digest as :{leader.task.tag}, copied with it")
        out.append(item)
    return out


def estimate_cost(media_type: str, platforms: Sequence[str], known_children: int | None = None) -> int:
    """Manifest GETs a copy makes at the upstream: the top manifest plus the selected children."""
    if media_type not in INDEX_TYPES:
        return 1
    if platforms:
        return 1 + CHILDREN_PER_PLATFORM * len(platforms)
    return 1 + (known_children if known_children is not None else DEFAULT_INDEX_CHILDREN)


def count_children(body: bytes) -> int | None:
    try:
        manifests = json.loads(body).get("manifests")
    except (ValueError, AttributeError):
        return None
    return len(manifests) if isinstance(manifests, list) else None


def apply_budget(probes: Sequence[Probe], reserve: int) -> tuple[list[PlanItem], dict[str, Quota]]:
    """Defer the copies that would spend more manifest GETs than an upstream has above `reserve`.

    HEADs do not use quota, so the lowest `remaining` any HEAD saw is the upstream's current state.
    Copies are taken in config order; a later, cheaper one may still fit when an earlier one did not.
    """
    quotas: dict[str, Quota] = {}
    for probe in probes:
        if probe.remaining is None:
            continue
        registry = probe.item.task.ref.registry
        quota = quotas.get(registry)
        if quota is None:
            quotas[registry] = Quota(registry, probe.remaining, probe.limit, reserve)
        else:
            quota.remaining = min(quota.remaining, probe.remaining)
    items = []
    deferred: dict[tuple[Any, ...], str] = {}  # digests deferred: their tags that share them wait too
    for item in share_digests([probe.item for probe in probes]):
        quota = quotas.get(item.task.ref.registry)
        if item.action is Action.COPY and quota is not None:
            key = digest_key(item.task)
            if key in deferred:
                item = replace(item, action=Action.DEFERRED, reason=deferred[key])
            elif item.task.cost > quota.available:
                item = replace(item, action=Action.DEFERRED, reason=(
                    f"quota: needs {item.task.cost} manifest GETs, {quota.available} left above the reserve of "
                    f"{reserve} (remaining {quota.remaining})"))
                deferred[key] = item.reason
            else:
                quota.planned += item.task.cost
        items.append(item)
    return items, quotas

"""Staleness: how long a change upstream has waited to be mirrored, per upstream registry.

The planner sees a change (a source digest the destination does not have) at the first run after
the tag moved; it remembers when, by change (`<reference>@<digest>`), between runs, and reports per
upstream the age of the oldest change still pending (queued, deferred or failed). A change is
mirrored once a run finds the destination at that digest; it is then forgotten. A change held for want
of a signature (`unverified`) is not pending: it waits on the upstream, and has its own metric and alarm. The age counts
from the run that first saw it, so the tag moved at most one schedule interval earlier. Where the
remembered changes are kept between runs is the caller's (`aws.state.ParameterState` in the planner Lambda).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from .task import Action, Plan

MAX_REMEMBERED = 100  # oldest kept: they decide the age; about 3 kB of JSON, under SSM's 4 KB
MAX_BYTES = 4096  # a standard SSM parameter's value (PutParameter, Value); the signature memo shares it


def change_key(reference: str, digest: str) -> str:
    """A short stable key for one change, so the state fits a standard SSM parameter."""
    return hashlib.sha256(f"{reference}@{digest}".encode()).hexdigest()[:16]


def track(plan: Plan, seen: Mapping[str, float], now: float) -> tuple[dict[str, float], dict[str, float]]:
    """(when each pending change was first seen, oldest pending age in seconds per upstream registry).

    Every upstream the plan touched gets an age, 0 when nothing of it is pending. A tag whose source
    could not be checked (429 before its HEAD, listing failed) has no digest and is not counted.
    """
    pending: dict[str, float] = {}
    ages: dict[str, float] = {}
    for item in plan.items:
        task = item.task
        registry = task.ref.registry
        ages.setdefault(registry, 0.0)
        if item.action in (Action.SKIP, Action.UNVERIFIED) or not task.source_digest or task.referrers_only:
            continue  # a referrers-only copy: the image itself is mirrored
        key = change_key(str(task.ref), task.source_digest)
        first = min(seen.get(key, now), now)
        pending[key] = first
        ages[registry] = max(ages[registry], now - first)
    return pending, ages


def trimmed(pending: Mapping[str, float]) -> dict[str, float]:
    """The oldest MAX_REMEMBERED entries whose JSON fits MAX_BYTES: newer ones are re-seen as new, which never hides
    the oldest."""
    kept = dict(sorted(pending.items(), key=lambda kv: kv[1])[:MAX_REMEMBERED])
    while len(json.dumps(kept, separators=(",", ":"))) > MAX_BYTES:
        kept.popitem()  # the newest
    return kept

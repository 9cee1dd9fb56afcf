"""What a plan is made of: the task a copy runs (also the SQS message body), each image/tag's action, the
upstreams' quotas, and the plan itself."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from ecr_mirror_cdk.reference import TAG_RE, Reference, parse

from .plan_referrers import ReferrersCheck


class SupersededTask(ValueError):
    """A queued task in a shape this version no longer runs; the next plan queues its replacement."""


class Action(StrEnum):
    COPY = "copy"
    SKIP = "skip"
    DEFERRED = "deferred"
    FAILED = "failed"
    UNVERIFIED = "unverified"  # the digest moved, but no signature from the image's key: the tag stays


@dataclass(frozen=True)
class Task:
    """One image/tag that needs work: the SQS message body, and what the CLI runs."""

    source: str  # as in mirror.yaml: `python`, `gcr.io/distroless/base-debian12`
    tag: str
    repository: str  # destination repository
    source_digest: str | None = None
    destination_digest: str | None = None
    platforms: tuple[str, ...] = ()
    cost: int = 1  # manifest GETs at the upstream
    mount_from: tuple[str, ...] = ()
    # More tags of the same source digest, each with the digest its destination tag had when planned.
    also: tuple[tuple[str, str | None], ...] = ()
    # sync.quota_reserve: the copy sends no manifest GET that would leave the upstream fewer pulls.
    reserve: int | None = None
    referrers: bool = False  # copy what refers to the image's manifests too
    referrers_only: bool = False  # the tag is up to date: copy only the referrers of its digest
    referrers_cost: int = 0  # the part of `cost` the referrers take
    # The planner verified source_digest's signature: copy exactly that digest, never what the tag moved to since.
    verified: bool = False

    @property
    def tags(self) -> tuple[str, ...]:
        return (self.tag, *(tag for tag, _ in self.also))

    @property
    def ref(self) -> Reference:
        return parse(self.source).with_tag(self.tag)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, body: str) -> Task:
        """Parse a message body; ValueError names what is wrong."""
        try:
            data = json.loads(body)
        except json.JSONDecodeError as err:
            raise ValueError(f"task is not JSON: {err}") from None
        if not isinstance(data, dict):
            raise ValueError("task must be a JSON object")
        for key in ("source", "tag", "repository"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ValueError(f"task field {key!r} must be a non-empty string")
        if data.pop("via", None):
            raise SupersededTask("task was planned by an earlier version as a pull-through cache warm; "
                                 "the next plan queues it as a direct copy")
        unknown = set(data) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"task has unknown field {sorted(unknown)[0]!r}")
        also = data.get("also") or []
        if not isinstance(also, list) or not all(isinstance(a, list) and len(a) == 2 for a in also):
            raise ValueError("task field 'also' must be a list of [tag, digest] pairs")
        for tag in [data["tag"], *(a[0] for a in also)]:
            if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
                raise ValueError(f"task tag {tag!r} is not a valid tag")
        reserve = data.get("reserve")
        if reserve is not None and (isinstance(reserve, bool) or not isinstance(reserve, int)):
            raise ValueError("task field 'reserve' must be an integer")
        for flag in ("referrers", "referrers_only"):
            if not isinstance(data.get(flag, False), bool):
                raise ValueError(f"task field {flag!r} must be true or false")
        verified = data.get("verified", False)
        if not isinstance(verified, bool) or (verified and not isinstance(data.get("source_digest"), str)):
            raise ValueError("task field 'verified' must be a boolean, and true only with a source_digest")
        task = cls(
            source=data["source"], tag=data["tag"], repository=data["repository"],
            source_digest=data.get("source_digest"), destination_digest=data.get("destination_digest"),
            platforms=tuple(data.get("platforms") or ()), cost=int(data.get("cost", 1)),
            mount_from=tuple(data.get("mount_from") or ()), also=tuple((a[0], a[1]) for a in also),
            reserve=reserve, referrers=data.get("referrers", False), referrers_only=data.get("referrers_only", False),
            referrers_cost=int(data.get("referrers_cost", 0)), verified=verified,
        )
        task.ref  # noqa: B018 - validates the source reference (raises ReferenceError, a ValueError)
        return task


@dataclass(frozen=True)
class PlanItem:
    task: Task
    action: Action
    reason: str = ""
    retry_after: float | None = None
    referrers: ReferrersCheck | None = None  # None: referrers off for the image, or not checked

    @property
    def costs(self) -> bool:
        return self.action in (Action.COPY, Action.DEFERRED)

    def as_dict(self) -> dict[str, Any]:
        task = self.task
        return {
            "image": task.source, "tag": task.tag, "source": str(task.ref), "repository": task.repository,
            "source_digest": task.source_digest,
            "destination_digest": task.destination_digest, "action": str(self.action),
            "cost": task.cost if self.costs else 0, "reason": self.reason,
            **(self.referrers.as_dict() if self.referrers else {"referrers": None, "referrers_new": 0}),
            "referrers_cost": task.referrers_cost if self.costs else 0,
        }


@dataclass
class Quota:
    """An upstream's rate limit as its HEADs reported it, and what this plan spends of it."""

    registry: str
    remaining: int
    limit: int | None = None
    reserve: int = 0
    planned: int = 0

    @property
    def available(self) -> int:
        return max(0, self.remaining - self.reserve - self.planned)

    def as_dict(self) -> dict[str, Any]:
        return {"registry": self.registry, "limit": self.limit, "remaining": self.remaining,
                "reserve": self.reserve, "planned": self.planned}


@dataclass
class Plan:
    items: list[PlanItem]
    quotas: dict[str, Quota] = field(default_factory=dict)
    # Unsigned digests found this run (planner-state key -> when checked), so the next run need not GET again.
    unsigned: dict[str, float] = field(default_factory=dict)

    def tasks(self) -> list[Task]:
        """One task per new source digest: tags that share it ride along in the first one's `also`."""
        groups: dict[tuple[Any, ...], Task] = {}
        for item in self.items:
            if item.action is Action.COPY:
                key = digest_key(item.task)
                first = groups.setdefault(key, item.task)
                if first is not item.task:
                    groups[key] = replace(first, also=(*first.also, (item.task.tag, item.task.destination_digest)))
        return list(groups.values())

    def counts(self) -> Counter[str]:
        return Counter(str(item.action) for item in self.items)


def digest_key(task: Task) -> tuple[Any, ...]:
    """Copies that are one copy: same source image and digest, same destination, same filter, and both moving
    tags or both copying referrers only (one of each sharing a task would leave the moved tag behind)."""
    return (task.source, task.source_digest or f"tag:{task.tag}", task.repository, task.platforms,
            task.referrers_only)

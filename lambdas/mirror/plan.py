"""Copy planning: expand each image into tags, route it, compare digests with HEADs only, and keep
the manifest GETs the plan will cause within what the upstream's rate limit has left.

Every configured image is a direct copy into its own repository (`mirror/<host>/<path>` or its
`target`), never a pull through a cache rule: ECR documents cache pulls by tag only, and a cached tag
may be a day old (docs/engine.md).

Platform filters: when `platforms` drops entries from an index, the destination gets a smaller
index whose digest differs from the source's; the engine records the source index digest next to
it (`recorded_source_digest`), and planning compares against that, so a filtered image is
recognised as up to date without a GET at the source.

Tags that share a digest: new tags of one image that point at the same source digest become one
task (the first tag, the rest in `also`) costing one set of GETs; the copy puts the manifest it
fetched once under every tag.

Referrers (`referrers`, on by default): a copy also lists and copies what refers to the image's
manifests, and its cost counts those GETs; an up-to-date tag whose referrers changed (or whose turn
to list them at a rate-limited source came) becomes a referrers-only copy (plan_referrers.py), which
never moves a tag.

Signatures: for an image with `verify`, a tag whose digest moved is queued only when a signature from
its key over the new digest verifies (signatures.py; the check's GETs are planned like the copy's), and
then as a copy of exactly that digest; otherwise the item is `unverified` and the destination tag stays
where it was. Nothing of an unsigned digest is copied. This is the one place a tag's move is decided:
the copier puts tags only for queued tasks.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from functools import partial
from typing import Any, Protocol

from ecr_mirror_cdk.config import Config, Image
from ecr_mirror_cdk.reference import TAG_RE, Reference, parse

from .endpoints import Endpoints
from .errors import RegistryError, SupersededTask, TooManyRequests
from .manifests import INDEX_TYPES
from .plan_referrers import REFRESH, ReferrersCheck, check, listings, refresh_due, schedule_period
from .settings import SERVICE_NAME
from .signatures import SIGNATURE_COST, Checker, Keys, KeyUnavailable

# Plain logging: the Lambdas' Powertools Logger formats this logger (same name); the CLI, which
# needs no Powertools, sets its own handler.
logger = logging.getLogger(SERVICE_NAME)

# An unfiltered index nobody has copied yet: assume an official-image-sized one, ~8 platforms
# each with its attestation manifest. Pessimistic on purpose: the budget may only delay work.
DEFAULT_INDEX_CHILDREN = 16
# A selected platform costs its image manifest and, for buildx images, its attestation manifest.
CHILDREN_PER_PLATFORM = 2
# Other mirrored repositories offered to the engine for cross-repository blob mounts.
MOUNT_CANDIDATES = 8


class RecordedDigest(Protocol):
    """copy.recorded_source_digest: the source digest a destination tag was copied from."""

    def __call__(self, destination: Any, repository: str, tag: str, *,
                 platforms: Sequence[str] | None = None) -> str | None: ...


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
                key = _digest_key(item.task)
                first = groups.setdefault(key, item.task)
                if first is not item.task:
                    groups[key] = replace(first, also=(*first.also, (item.task.tag, item.task.destination_digest)))
        return list(groups.values())

    def counts(self) -> Counter[str]:
        return Counter(str(item.action) for item in self.items)


@dataclass(frozen=True)
class Probe:
    """What the HEADs found for one image/tag, before the budget is applied."""

    item: PlanItem
    remaining: int | None = None
    limit: int | None = None


def expand_tags(image: Image, list_tags: Callable[[], Iterable[str]]) -> list[str]:
    """Explicit tags in config order, then the other `tag_regex` full matches, sorted. A listed
    tag outside the OCI tag grammar is ignored: it would not name one tag in a URL."""
    tags = list(dict.fromkeys(image.tags))
    if image.tag_regex:
        pattern = re.compile(image.tag_regex)
        listed = {tag for tag in list_tags() if isinstance(tag, str) and TAG_RE.fullmatch(tag)}
        tags += sorted({tag for tag in listed if pattern.fullmatch(tag)} - set(tags))
    return tags


def _digest_key(task: Task) -> tuple[Any, ...]:
    """Copies that are one copy: same source image and digest, same destination, same filter, and both moving
    tags or both copying referrers only (one of each sharing a task would leave the moved tag behind)."""
    return (task.source, task.source_digest or f"tag:{task.tag}", task.repository, task.platforms,
            task.referrers_only)


def share_digests(items: Sequence[PlanItem]) -> list[PlanItem]:
    """A copy of a digest another copy of this run already fetches costs nothing more."""
    first: dict[tuple[Any, ...], PlanItem] = {}
    out = []
    for item in items:
        if item.action is Action.COPY and item.task.source_digest:
            leader = first.setdefault(_digest_key(item.task), item)
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
            key = _digest_key(item.task)
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


class _Planner:
    def __init__(self, config: Config, endpoints: Endpoints, recorded: RecordedDigest, now: float) -> None:
        self.config = config
        self.endpoints = endpoints
        self.recorded = recorded
        self.now = now
        self.period = schedule_period(config.schedule)
        # Upstreams that answered 429 this run: nothing more is asked of them until the next run.
        self.throttled: dict[str, float | None] = {}

    def expand(self) -> list[Probe | tuple[Image, Task]]:
        """Ready plan items (listing failed) and the image/tag jobs that still need HEADs."""
        repositories = [i.repository for i in self.config.images]
        out: list[Probe | tuple[Image, Task]] = []
        for image in self.config.images:
            mounts = tuple(r for r in repositories if r != image.repository)[:MOUNT_CANDIDATES]
            ref = image.ref
            template = Task(image.source, "*", image.repository, platforms=image.platforms, mount_from=mounts,
                            reserve=self.config.sync.quota_reserve, referrers=image.referrers)
            try:
                source = self.endpoints.source(ref.registry)
            except RegistryError as err:  # its credentials cannot be read: this image fails, the rest go on
                out += [Probe(PlanItem(replace(template, tag=tag), Action.FAILED, str(err)))
                        for tag in image.tags or ("*",)]
                continue
            try:
                tags = expand_tags(image, partial(source.list_tags, ref.repository))
            except TooManyRequests as err:
                self.throttled[ref.registry] = err.retry_after
                out.append(Probe(PlanItem(template, Action.DEFERRED, "upstream answered 429 to the tag list",
                                          err.retry_after)))
                continue
            except (RegistryError, OSError) as err:
                out.append(Probe(PlanItem(template, Action.FAILED, f"cannot list tags: {err}")))
                continue
            out.extend((image, replace(template, tag=tag)) for tag in tags)
        return out

    def probe(self, image: Image, task: Task) -> Probe:
        registry = task.ref.registry
        if registry in self.throttled:
            return Probe(PlanItem(task, Action.DEFERRED, "upstream answered 429 earlier in this run",
                                  self.throttled[registry]))
        try:
            info = self.endpoints.source(registry).head_manifest(task.ref.repository, task.tag)
        except TooManyRequests as err:
            self.throttled[registry] = err.retry_after
            return Probe(PlanItem(task, Action.DEFERRED, "upstream answered 429", err.retry_after))
        except (RegistryError, OSError) as err:
            return Probe(PlanItem(task, Action.FAILED, f"source HEAD failed: {err}"))
        if info is None:
            return Probe(PlanItem(task, Action.FAILED, "tag not found at the source"))
        rate = info.rate_limit
        remaining = rate.remaining if rate is not None else None
        limit = rate.limit if rate is not None else None
        task = replace(task, source_digest=info.digest)
        try:
            current, up_to_date, children = self.destination_state(image, task, info.media_type)
        except (RegistryError, OSError) as err:  # the destination registry: fail this tag only
            return Probe(PlanItem(task, Action.FAILED, f"destination check failed: {err}"), remaining, limit)
        task = replace(task, destination_digest=current)
        referrers = None
        if image.referrers and image.platforms and info.media_type in INDEX_TYPES:
            # A filtered index is rewritten: what refers to the source's index does not refer to the copy.
            referrers = ReferrersCheck(None, 0, note="filtered index: the platform manifests' referrers only")
        elif image.referrers:
            referrers = self.referrers(task, info, remaining, listing=up_to_date)
        if up_to_date:
            note = "up to date" if current == info.digest else "up to date (filtered index of the source digest)"
            if referrers is None or not referrers.due:
                return Probe(PlanItem(task, Action.SKIP, note, referrers=referrers), remaining, limit)
            task = replace(task, referrers_only=True, cost=referrers.cost, referrers_cost=referrers.cost)
            why = f"{referrers.missing} new" if referrers.missing else f"listed every {REFRESH // 3600} h"
            return Probe(PlanItem(task, Action.COPY, f"referrers: {why}", referrers=referrers), remaining, limit)
        signature = SIGNATURE_COST if image.verify is not None else 0
        extra = 0
        if image.referrers:
            extra = listings(info.media_type, image.platforms, children, DEFAULT_INDEX_CHILDREN, CHILDREN_PER_PLATFORM)
            extra += referrers.missing if referrers else 0
        task = replace(task, cost=estimate_cost(info.media_type, image.platforms, children) + signature + extra,
                       referrers_cost=extra)
        reason = "new" if current is None else "changed"
        return Probe(PlanItem(task, Action.COPY, reason, referrers=referrers), remaining, limit)

    def referrers(self, task: Task, info: Any, remaining: int | None, *, listing: bool) -> ReferrersCheck | None:
        """The referrers of the tag's digest (plan_referrers.py). `listing`: the tag is up to date, so its OCI 1.1
        referrers are listed here where that costs no pulls (or, at a rate-limited source, on its turn); a tag
        whose digest moved gets HEADs only, since its copy lists them anyway."""
        registry = task.ref.registry
        metered = remaining is not None
        try:
            return check(self.endpoints.source(registry), self.endpoints.destination, task.ref.repository,
                         task.repository, info.digest, list_source=listing and not metered,
                         refresh=listing and metered and refresh_due(str(task.ref), self.now, self.period))
        except TooManyRequests as err:
            self.throttled[registry] = err.retry_after
            return None
        except (RegistryError, OSError) as err:
            logger.warning(f"referrers of {task.ref} not checked: {err}")
            return None

    def destination_state(self, image: Image, task: Task, media_type: str) -> tuple[str | None, bool, int | None]:
        """(digest the destination tag has, whether it is a copy of the source's, children of its index)."""
        destination = self.endpoints.destination
        head = destination.head_manifest(task.repository, task.tag)
        if head is None:
            return None, False, None
        if head.digest == task.source_digest:
            return head.digest, True, None
        if image.platforms and media_type in INDEX_TYPES:
            recorded = self.recorded(destination, task.repository, task.tag, platforms=image.platforms)
            return head.digest, recorded == task.source_digest, None
        children = None
        if head.media_type in INDEX_TYPES:
            # Our own registry: a GET here is free and tells how big the previous index was.
            body, _ = destination.get_manifest(task.repository, head.digest)
            children = count_children(body)
        return head.digest, False, children


def hold_unsigned(items: Sequence[PlanItem], config: Config, endpoints: Endpoints,
                  checker: Checker) -> list[PlanItem]:
    """Copies of images with `verify` stay copies only where the new digest is signed by the image's key."""
    images = {image.repository: image for image in config.images}
    out = []
    for item in items:
        task, image = item.task, images.get(item.task.repository)
        if (item.action is not Action.COPY or image is None or image.verify is None or not task.source_digest
                or task.referrers_only):  # referrers alone never move a tag
            out.append(item)
            continue
        try:
            verdict = checker.check(endpoints.source(task.ref.registry), task.ref.repository, task.source_digest,
                                    image.verify.source)
        except TooManyRequests as err:  # QuotaReserved included: the check waits for the next run
            out.append(replace(item, action=Action.DEFERRED, reason=f"signature check: {err}",
                               retry_after=err.retry_after))
            continue
        except (KeyUnavailable, RegistryError, OSError) as err:
            out.append(replace(item, action=Action.FAILED, reason=f"signature check failed: {err}"))
            continue
        if verdict.verified:
            out.append(replace(item, task=replace(task, verified=True), reason=f"{item.reason}; {verdict.reason}"))
        else:
            held = f"tag stays at {task.destination_digest}" if task.destination_digest else "tag not created"
            out.append(replace(item, action=Action.UNVERIFIED, reason=f"{held}: {verdict.reason}"))
    return out


def plan(config: Config, endpoints: Endpoints, *, recorded: RecordedDigest | None = None,
         workers: int = 8, check_signatures: bool = True, checker: Checker | None = None,
         now: float | None = None) -> Plan:
    """HEADs only at the sources: nothing here costs Docker Hub quota, except the signature checks of
    images with `verify` whose digest moved (`check_signatures`; the CLI's `plan` leaves them out) and,
    at a source without a rate limit, the referrers listings. `now` (default: the clock) decides whose turn
    it is to have its referrers listed at a rate-limited source (plan_referrers.refresh_due)."""
    if recorded is None:
        from .copy import recorded_source_digest

        recorded = recorded_source_digest
    planner = _Planner(config, endpoints, recorded, time.time() if now is None else now)
    slots = planner.expand()
    jobs = [slot for slot in slots if isinstance(slot, tuple)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        probed = iter(list(pool.map(lambda job: planner.probe(*job), jobs)))
    probes = [slot if isinstance(slot, Probe) else next(probed) for slot in slots]
    items, quotas = apply_budget(probes, config.sync.quota_reserve)
    if check_signatures and any(image.verify is not None for image in config.images):
        checker = checker or Checker(Keys(), floor=config.sync.quota_reserve, remembered={}, now=time.time())
        items = hold_unsigned(items, config, endpoints, checker)
    for item in items:
        if item.action in (Action.DEFERRED, Action.FAILED, Action.UNVERIFIED):
            level = logger.info if item.action is Action.DEFERRED else logger.warning
            level(f"{item.action}: {item.task.ref}", extra=item.as_dict())
    return Plan(items, quotas, dict(checker.unsigned) if checker else {})

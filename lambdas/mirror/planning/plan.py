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

import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import Any, Protocol

from ecr_mirror_cdk.config import Config, Image
from ecr_mirror_cdk.reference import TAG_RE

from ..oci.endpoints import Endpoints
from ..oci.errors import RegistryError, TooManyRequests
from ..oci.manifests import INDEX_TYPES
from ..settings import SERVICE_NAME
from .budget import CHILDREN_PER_PLATFORM, DEFAULT_INDEX_CHILDREN, Probe, apply_budget, count_children, estimate_cost
from .plan_referrers import REFRESH, ReferrersCheck, check, listings, refresh_due, schedule_period
from .signatures import SIGNATURE_COST, Checker, Keys, KeyUnavailable
from .task import Action, Plan, PlanItem, Task

# Plain logging: the Lambdas' Powertools Logger formats this logger (same name); the CLI, which
# needs no Powertools, sets its own handler.
logger = logging.getLogger(SERVICE_NAME)

# Other mirrored repositories offered to the engine for cross-repository blob mounts.
MOUNT_CANDIDATES = 8


class RecordedDigest(Protocol):
    """copy.recorded_source_digest: the source digest a destination tag was copied from."""

    def __call__(self, destination: Any, repository: str, tag: str, *,
                 platforms: Sequence[str] | None = None) -> str | None: ...


def expand_tags(image: Image, list_tags: Callable[[], Iterable[str]]) -> list[str]:
    """Explicit tags in config order, then the other `tag_regex` full matches, sorted. A listed
    tag outside the OCI tag grammar is ignored: it would not name one tag in a URL."""
    tags = list(dict.fromkeys(image.tags))
    if image.tag_regex:
        pattern = re.compile(image.tag_regex)
        listed = {tag for tag in list_tags() if isinstance(tag, str) and TAG_RE.fullmatch(tag)}
        tags += sorted({tag for tag in listed if pattern.fullmatch(tag)} - set(tags))
    return tags


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
        from ..oci.copy import recorded_source_digest

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

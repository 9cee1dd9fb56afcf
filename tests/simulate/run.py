"""Run one simulated day in one mode and measure it.

Time is simulated: a ManualClock, which the limiter counts by, jumps from event to event (upstream
tag bumps, scheduled syncs, build starts), and each event's requests run at once over real loopback
HTTP. So Docker Hub's real 6-hour window applies unscaled, and the day takes as long as its requests.

A build "pulls" its bases as a Docker client resolving them does: for each distinct base image of
the Dockerfile (redirect.find_images: FROM, COPY --from=<image>, ARGs substituted), a manifest GET
by tag, then, for an index, a GET of the build platform's manifest, then GETs of its config and
layers (a fresh CodeBuild host has no layer cache). Then its test commands `docker run` their
images (fleet.TEST_RUNS), pulled the same way. The first 429 fails the build; nothing is
retried, as `docker build` does not retry. Clients are the engine's RegistryClient.

Mirrored, the builds pull `<ecr>/docker-hub/<path>` from the ECR-like pull-through cache
(world.py), test-run images included (the daemon's registry mirror, codebuild/setup_mirror.py,
sends `docker run postgres:16-alpine` there). The cache checks a tag upstream at most once per 24
hours; the scheduled sync warms the bumped digest and moves the cache's tag
(`copy.refresh_through_cache`). `Mode.MIRRORED_BY_TAG` runs the same engine with the tasks' source
digests dropped, so the copier warms by tag, as it did before that fix, to show what ECR's 24
hours do then.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from lambdas.mirror.config import DEFAULT_SCHEDULE
from lambdas.mirror.endpoints import Endpoints, connect
from lambdas.mirror.errors import RegistryError, TooManyRequests
from lambdas.mirror.manifests import parse_manifest, platform_matches
from lambdas.mirror.plan import plan as plan_sync
from lambdas.mirror.reference import parse
from lambdas.mirror.registry import RegistryClient
from lambdas.mirror.settings import SERVICE_NAME
from lambdas.mirror.sync import run_tasks
from tests.simulate.dockerfile import MirrorMap, find_images, parse_dockerfile
from tests.simulate.dockerfile import plan as redirect_plan
from tests.support.limiter import SIX_HOURS, ManualClock, Policy

from .fleet import TEST_RUNS, Build, Bump, Day
from .world import MIRROR_USER, PTC_PREFIX, World, mirror_config, mirror_map, seeded

_RATE = re.compile(r"rate\((\d+) (minute|hour|day)s?\)")
_UNIT = {"minute": 60, "hour": 3600, "day": 86400}


class Mode(StrEnum):
    DIRECT = "direct"
    LOGGED_IN = "logged in"
    MIRRORED = "mirrored"
    MIRRORED_BY_TAG = "mirrored, warm by tag"  # without the retag fix: ECR's 24 h decide

    @property
    def mirrored(self) -> bool:
        return self in (Mode.MIRRORED, Mode.MIRRORED_BY_TAG)


@dataclass(frozen=True)
class Base:
    """How a build reaches one base image: registry host, repository there, tag, and credentials."""

    host: str
    repository: str
    reference: str
    username: str | None = None
    password: str | None = None
    image: str = ""  # the catalog name it stands for (`python:3.12-slim`)
    test_run: bool = False  # pulled by a test command's `docker run`, not by the Dockerfile


@dataclass(frozen=True)
class Staleness:
    """One upstream tag bump, seen by the builds."""

    image: str
    bumped_at: float
    old: str  # the tag's digest before the bump
    new: str  # and after
    served_after: float | None  # until the cache's tag named `new` (every later pull gets it); None: never
    stale_builds: int  # builds after the bump that still got `old`


@dataclass
class Result:
    mode: Mode
    builds: int = 0
    failed_429: int = 0
    failed_other: int = 0
    upstream_gets: int = 0  # counted manifest GETs at "Docker Hub" during the day, every identity
    upstream_bytes: int = 0  # body bytes "Docker Hub" served during the day (manifests and blobs)
    throttled: int = 0  # 429 responses
    prefill_gets: int = 0  # mirrored: the mirror's first fill, before the day starts
    prefill_bytes: int = 0
    expected_gets: int | None = None  # mirrored: manifests the cache fetches for the bumped tags
    staleness: list[Staleness] = field(default_factory=list)
    resolved: list[tuple[float, str, str]] = field(default_factory=list)  # mirrored: (t, repo:tag, digest) per base
    mirror_fetches: Counter[str] = field(default_factory=Counter)  # digest -> the mirror's GETs of it in the day
    syncs: list[tuple[float, Counter[str]]] = field(default_factory=list)
    policy: Policy = SIX_HOURS
    schedule: str = DEFAULT_SCHEDULE
    image_pulls: Counter[str] = field(default_factory=Counter)  # catalog name -> successful pulls by builds
    test_pulls: int = 0  # images builds' test commands pulled (`docker run`), wherever from
    test_hub_pulls: int = 0  # test-run images "Docker Hub" served to the builds themselves (GETs by tag)
    build_hub_gets: int = 0  # manifest GETs "Docker Hub" served to the builds themselves (not the mirror)
    planner_runs: int = 0  # mirrored: scheduled planner runs in the day (the first fill not counted)
    mirror_heads: int = 0  # mirrored: manifest HEADs the mirror's account made at "Docker Hub" in the day
    copier_tasks: int = 0  # mirrored: tasks the planners queued in the day (one SQS message each)
    copier_bytes: int = 0  # mirrored: bytes the copier moved in the day
    plan_seconds: float = 0.0  # mirrored: wall time of the day's plans, in process over loopback
    timeline: list[tuple[float, int, int]] = field(default_factory=list)  # (t, cumulative GETs, failed builds)
    errors: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0


def schedule_period(expression: str) -> float:
    match = _RATE.fullmatch(expression)
    if not match:
        raise ValueError(f"the simulation runs rate(...) schedules only, not {expression!r}")
    return int(match[1]) * _UNIT[match[2]]


def pull(client: RegistryClient, repository: str, reference: str, platform: str) -> str:
    """Resolve and download one base image as a Docker client would; raises what the registry says.
    Returns the digest the reference resolved to."""
    body, info = client.get_manifest(repository, reference)
    manifest = parse_manifest(body, info.media_type, info.digest)
    resolved = info.digest
    if manifest.is_index:
        child = next((c for c in manifest.children if not c.is_attestation and platform_matches(c.platform, platform)),
                     None)
        if child is None:
            raise RegistryError(f"{repository}:{reference} has no {platform} image")
        body, info = client.get_manifest(repository, child.digest)
        manifest = parse_manifest(body, info.media_type, info.digest)
    for blob in manifest.blobs:
        client.open_blob(repository, blob.digest, blob.size).read_all()
    return resolved


def base_images(build: Build) -> list[str]:
    """The images the build's Dockerfile pulls, as written (after ARG substitution), each once."""
    images, _ = find_images(parse_dockerfile(build.dockerfile), {})
    return list(dict.fromkeys(use.written for use in images))


class Fleet:
    """Runs builds against the world in one mode."""

    def __init__(self, world: World, mode: Mode, accounts: Sequence[tuple[str, str]] = ()) -> None:
        self.world = world
        self.mode = mode
        self.accounts = list(accounts)
        self.map: MirrorMap | None = None  # mirrored mode: what the build's redirect step is given
        self.resolved: list[tuple[float, str, str]] = []  # (t, repository:reference, digest) of each base
        self.pulled: Counter[str] = Counter()  # catalog name -> successful pulls
        self.test_pulls = 0

    def route(self, build: Build) -> list[Base]:
        hub = self.world.hub.limiter.host
        if self.mode.mirrored:
            return self._mirrored(build)
        credentials: tuple[str | None, str | None] = (None, None)
        if self.mode is Mode.LOGGED_IN:
            # Teams share accounts by service: one account when there is one (the seeds' setup).
            credentials = self.accounts[hash_service(build.service) % len(self.accounts)]
        out = []
        for written in base_images(build):
            ref = parse(written)
            out.append(Base(hub, ref.repository, ref.digest or ref.tag or "latest", *credentials, image=written))
        for written in build.test_runs:  # the daemon pulls with the build's `docker login`, if any
            ref = parse(written)
            out.append(Base(hub, ref.repository, ref.tag or "latest", *credentials, image=written, test_run=True))
        return out

    def _mirrored(self, build: Build) -> list[Base]:
        assert self.map is not None
        redirects, _ = redirect_plan(build.dockerfile, self.map, {})
        out = []
        for redirect in redirects:
            if redirect.target is None:  # not covered: the build goes to Docker Hub anonymously
                ref = parse(redirect.written)
                out.append(Base(self.world.hub.limiter.host, ref.repository, ref.digest or ref.tag or "latest",
                                image=redirect.written))
                continue
            ref = parse(redirect.target)  # <ecr>/docker-hub/library/python:3.12-slim, pulled as written
            out.append(Base(ref.registry, ref.repository, ref.digest or ref.tag or "latest", image=redirect.written))
        assert self.world.mirror is not None
        for written in build.test_runs:
            # A registry mirror for docker.io: the same path under the cache's prefix (setup_mirror.py's endpoint).
            ref = parse(written)
            out.append(Base(self.world.mirror.cache.host, f"{PTC_PREFIX}/{ref.repository}", ref.tag or "latest",
                            image=written, test_run=True))
        return out

    def build(self, build: Build) -> str | None:
        """Pull every base; None on success, else "429" or the error."""
        clients: dict[tuple[str, str | None], RegistryClient] = {}
        try:
            for base in self.route(build):
                key = (base.host, base.username)
                if key not in clients:  # a fresh CodeBuild container: new client, new tokens
                    clients[key] = RegistryClient(base.host, username=base.username, password=base.password,
                                                  pool_size=2, max_retry_wait=0)
                digest = pull(clients[key], base.repository, base.reference, build.platform)
                self.resolved.append((self.world.clock(), f"{base.repository}:{base.reference}", digest))
                self.pulled[catalog_name(base.image)] += 1
                self.test_pulls += base.test_run
        except TooManyRequests:
            return "429"
        except RegistryError as err:
            return str(err)
        finally:
            for client in clients.values():
                client.http.clear()
        return None


def catalog_name(written: str) -> str:
    """`python:3.12-slim`, `bitnami/kubectl:1.31`: how fleet.CATALOG names an image reference."""
    ref = parse(written)
    return f"{ref.repository.removeprefix('library/')}:{ref.tag or 'latest'}"


def hash_service(service: str) -> int:
    return sum(service.encode())  # stable across runs, unlike hash()


class _Secrets:
    """The engine's secret provider, holding the mirror's Docker Hub account in memory."""

    def __init__(self, username: str, token: str) -> None:
        self.value = json.dumps({"username": username, "accessToken": token})

    def get(self, name: str, max_age: int = 0) -> str:
        return self.value


def simulate(day: Day, mode: Mode, *, template: Path | None = None, policy: Policy = SIX_HOURS, accounts: int = 1,
             schedule: str = DEFAULT_SCHEDULE, progress: Callable[[str], None] | None = None) -> Result:
    """One mode over the day; every server is started here and stopped before returning.

    `template` is a `seeded(day)` directory, to share one seeding between modes.
    """
    started = time.monotonic()
    engine_log = logging.getLogger(SERVICE_NAME)  # the engine logs every copy; failures land in Result
    level = engine_log.level
    engine_log.setLevel(logging.ERROR)
    try:
        with ExitStack() as stack:
            if template is None:
                template = stack.enter_context(seeded(day))
            result = _simulate(day, mode, template, policy=policy, accounts=accounts, schedule=schedule,
                               progress=progress)
    finally:
        engine_log.setLevel(level)
    result.wall_seconds = time.monotonic() - started
    return result


def _simulate(day: Day, mode: Mode, template: Path, *, policy: Policy, accounts: int, schedule: str,
              progress: Callable[[str], None] | None) -> Result:
    clock = ManualClock(start=_Sync.FIRST_FILL_START)
    team_accounts = [(f"team{n + 1}" if accounts > 1 else "ci", f"dckr_pat_team{n + 1}") for n in range(accounts)]
    users = dict(team_accounts) if mode is Mode.LOGGED_IN else {}
    result = Result(mode, policy=policy, schedule=schedule)
    with World(clock, template, policy=policy, users=users, mirror=mode.mirrored) as world:
        fleet = Fleet(world, mode, team_accounts)
        sync = None
        prefill_heads = 0
        if mode.mirrored:
            sync = _Sync(world, day, schedule, by_tag=mode is Mode.MIRRORED_BY_TAG)
            fleet.map = sync.map
            sync.first_fill(clock, result)
            world.hub.limiter.wait_idle()
            usage = world.hub.limiter.usage()
            result.prefill_gets = sum(u.manifest_gets for u in usage.values())
            result.prefill_bytes = sum(u.bytes_served for u in usage.values())
            prefill_heads = usage[MIRROR_USER].manifest_heads if MIRROR_USER in usage else 0
            result.planner_runs = result.copier_tasks = result.copier_bytes = 0
            result.plan_seconds = 0.0
        events = _events(day, mode, schedule)
        bumped: list[tuple[Bump, str, str, set[str]]] = []  # (bump, old digest, new digest, manifests fetched)
        served: dict[int, float] = {}  # bump index -> when the cache's tag first named the new digest
        for when, kind, item in events:
            clock.set(when)
            if kind == "bump":
                old, _ = world.hub.manifests_of(item.image)
                world.hub.bump(item)
                if mode.mirrored:
                    new, fetched = world.hub.manifests_of(item.image)
                    bumped.append((item, old, new, fetched))
            elif kind == "sync":
                assert sync is not None
                sync.run(clock, result)
            else:
                outcome = fleet.build(item)
                result.builds += 1
                if outcome == "429":
                    result.failed_429 += 1
                elif outcome is not None:
                    result.failed_other += 1
                    result.errors.append(f"build {item.number} ({item.service}): {outcome}")
            if world.mirror is not None:
                for index, (bump, _, new, _) in enumerate(bumped):
                    if index not in served and _cached_tag(world, bump) == new:
                        served[index] = when
            usage = world.hub.limiter.usage()
            gets = sum(u.manifest_gets for u in usage.values()) - result.prefill_gets
            result.timeline.append((when, gets, result.failed_429 + result.failed_other))
            if progress and kind == "build" and item.number % 100 == 0:
                progress(f"{mode}: {item.number} builds, {result.failed_429} failed with 429, {gets} upstream GETs")
        world.hub.limiter.wait_idle()
        usage = world.hub.limiter.usage()
        result.upstream_gets = sum(u.manifest_gets for u in usage.values()) - result.prefill_gets
        result.upstream_bytes = sum(u.bytes_served for u in usage.values()) - result.prefill_bytes
        result.throttled = sum(u.throttled for u in usage.values())
        result.resolved = fleet.resolved
        result.image_pulls = fleet.pulled
        result.test_pulls = fleet.test_pulls
        tested = {f"library/{name.split(':')[0]}" if "/" not in name else name.split(":")[0]
                  for names in TEST_RUNS.values() for name in names}
        for pull_ in world.hub.limiter.pulls():
            if pull_.identity != MIRROR_USER and pull_.status == 200 and pull_.time >= 0:
                result.build_hub_gets += 1
                result.test_hub_pulls += pull_.repository in tested and not pull_.reference.startswith("sha256:")
        if mode.mirrored:
            result.mirror_heads = usage[MIRROR_USER].manifest_heads - prefill_heads
            _staleness(world, bumped, served, result)
    return result


def _cached_tag(world: World, bump: Bump) -> str | None:
    assert world.mirror is not None
    return world.mirror.described_digest(f"{PTC_PREFIX}/{bump.image.repository}", bump.image.tag)


def _events(day: Day, mode: Mode, schedule: str) -> list[tuple[float, str, object]]:
    """Bumps, then syncs, then builds, at equal times; in time order. Syncs run from midnight to
    midnight inclusive: the next day's first run shows how stale the day's last bump got."""
    events: list[tuple[float, int, str, object]] = [(b.time, 0, "bump", b) for b in day.bumps]
    if mode.mirrored:
        period = schedule_period(schedule)
        events += [(n * period, 1, "sync", None) for n in range(int(day.length // period) + 1)]
    events += [(b.time, 2, "build", b) for b in day.builds]
    events.sort(key=lambda e: (e[0], e[1]))
    return [(t, kind, item) for t, _, kind, item in events]


class _Sync:
    """The scheduled planner and copier, in process: the engine's plan() and run_tasks().

    The cache is given in ECR's layout (`HOST/docker-hub`), and its tags are read as the Lambdas
    read ECR's, with DescribeImages (here: the stand-in's storage), never by pulling them.
    `by_tag`: drop each task's source digest, so the copier warms by tag (before the retag fix).
    """

    FIRST_FILL_START = -2 * 3600.0  # 22:00 the day before
    FIRST_FILL_EVERY = 600.0  # a run every 10 minutes until nothing is deferred

    def __init__(self, world: World, day: Day, schedule: str, *, by_tag: bool = False) -> None:
        mirror = world.mirror
        assert mirror is not None
        self.by_tag = by_tag
        self.config = mirror_config(list(day.images), schedule)
        self.map = mirror_map(self.config, mirror.cache.host)
        engine = connect(mirror.cache.host, upstreams={"docker.io": world.hub.limiter.host},
                         caches={PTC_PREFIX: f"{mirror.cache.host}/{PTC_PREFIX}"},
                         credentials={"docker.io": "simulation"}, secrets=_Secrets(MIRROR_USER, mirror.password))
        cache = engine.cache(PTC_PREFIX)
        assert cache is not None and cache.keeps_prefix
        self.endpoints = Endpoints(engine.destination, sources=engine.source,
                                   caches={PTC_PREFIX: replace(cache, cached_digest=mirror.described_digest)})

    def first_fill(self, clock: ManualClock, result: Result) -> None:
        """The mirror was running before this day: runs from 22:00 the day before until nothing is
        deferred. The planner assumes an index it has not seen lists 16 manifests, and keeps the
        quota reserve, so the budget spreads a first fill over runs (over hours, under an hourly
        limit of 100)."""
        runs = int(-self.FIRST_FILL_START // self.FIRST_FILL_EVERY)
        for n in range(runs):
            clock.set(self.FIRST_FILL_START + n * self.FIRST_FILL_EVERY)
            if not self.run(clock, result)["deferred"]:
                return
        result.errors.append(f"first fill still deferred work after {runs} runs")

    def run(self, clock: ManualClock, result: Result) -> Counter[str]:
        started = time.monotonic()
        plan = plan_sync(self.config, self.endpoints)
        result.plan_seconds += time.monotonic() - started
        result.planner_runs += 1
        tasks = plan.tasks()
        result.copier_tasks += len(tasks)
        if self.by_tag:
            tasks = [replace(task, source_digest=None) for task in tasks]
        outcomes = run_tasks(tasks, self.endpoints)
        counts = Counter(str(item.action) for item in plan.items)
        counts.update(f"task {o.status}" for o in outcomes)
        result.copier_bytes += sum(o.bytes_copied for o in outcomes)
        for outcome in outcomes:
            if outcome.status != "copied":
                result.errors.append(f"sync at {clock():.0f}s: {outcome.task.ref}: {outcome.status} {outcome.error}")
        result.syncs.append((clock(), counts))
        return counts


def _staleness(world: World, bumped: list[tuple[Bump, str, str, set[str]]], served: dict[int, float],
               result: Result) -> None:
    """Per bump: how long until the cache's tag named the new digest, and how many builds after the
    bump still resolved the old one. Also counts the mirror account's GETs of each digest."""
    for pull_ in world.hub.limiter.pulls():
        if pull_.identity == MIRROR_USER and pull_.status == 200 and pull_.digest and pull_.time >= 0:
            result.mirror_fetches[pull_.digest] += 1
    result.expected_gets = sum(len(fetched) for _, _, _, fetched in bumped)
    for index, (bump, old, new, _) in enumerate(bumped):
        key = f"{PTC_PREFIX}/{bump.image.repository}:{bump.image.tag}"
        stale = sum(1 for t, name, digest in result.resolved if name == key and t >= bump.time and digest == old)
        moved = served.get(index)
        result.staleness.append(Staleness(bump.image.name, bump.time, old, new,
                                          None if moved is None else moved - bump.time, stale))

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

Mirrored, the scheduled sync (the engine's plan() and run_tasks(), as the planner and copier
Lambdas run them, with the mirror's Docker Hub account) copies every image the simulated mirror.yaml
lists, digest-exact, into "ECR" under `mirror/docker.io/<path>`. Every pull of a build, its bases
and its test commands' `docker run` images alike, goes to the build host's endpoint
(ecr_mirror_cdk/setup/endpoint.py's handler, world.py) as dockerd and BuildKit send it to a registry mirror,
`/v2/library/python/manifests/3.12-slim`; the endpoint answers from the direct copy first, then from
the Docker Hub cache rule (tests/support/ptc.py) for what mirror.yaml does not list. What the
endpoint cannot serve (404) the client pulls from Docker Hub anonymously, as dockerd and BuildKit
fall back to the upstream.
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
from typing import Any

from ecr_mirror_cdk.config import DEFAULT_SCHEDULE, Config
from ecr_mirror_cdk.reference import DOCKER_HUB, parse
from lambdas.mirror.aws.connect import connect
from lambdas.mirror.oci.errors import RegistryError, TooManyRequests
from lambdas.mirror.oci.manifests import parse_manifest, platform_matches
from lambdas.mirror.oci.registry import RegistryClient
from lambdas.mirror.planning.plan import plan as plan_sync
from lambdas.mirror.planning.sync import run_tasks
from lambdas.mirror.settings import SERVICE_NAME
from tests.simulate.dockerfile import find_images, parse_dockerfile
from tests.support.limiter import SIX_HOURS, ManualClock, Policy

from .fleet import TEST_RUNS, UNLISTED, Build, Bump, Day
from .world import MIRROR_USER, PTC_PREFIX, World, mirror_config, seeded

_RATE = re.compile(r"rate\((\d+) (minute|hour|day)s?\)")
_UNIT = {"minute": 60, "hour": 3600, "day": 86400}


class Mode(StrEnum):
    DIRECT = "direct"
    LOGGED_IN = "logged in"
    MIRRORED = "mirrored"


@dataclass(frozen=True)
class Base:
    """How a build reaches one base image: registry host, repository there, tag, and credentials."""

    host: str
    repository: str
    reference: str
    username: str | None = None
    password: str | None = None
    image: str = ""  # the image as written (`python:3.12-slim`)
    test_run: bool = False  # pulled by a test command's `docker run`, not by the Dockerfile
    fallback: Base | None = None  # where the client goes when the registry mirror answers 404: Docker Hub


@dataclass(frozen=True)
class Staleness:
    """One upstream tag bump, seen by the builds."""

    image: str
    bumped_at: float
    old: str  # the tag's digest before the bump
    new: str  # and after
    served_after: float | None  # until the mirror's tag was a copy of `new` (every later pull gets it); None: never
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
    expected_gets: int | None = None  # mirrored: manifests the direct copies fetch for the bumped tags
    staleness: list[Staleness] = field(default_factory=list)
    resolved: list[tuple[float, str, str]] = field(default_factory=list)  # (t, image as written, digest) per pull
    served: Counter[str] = field(default_factory=Counter)  # mirrored: the endpoint's manifest answers, by source
    cached_images: set[str] = field(default_factory=set)  # mirrored: images the endpoint served from the cache rule
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
        self.resolved: list[tuple[float, str, str]] = []  # (t, image as written, digest) of each pull
        self.pulled: Counter[str] = Counter()  # catalog name -> successful pulls
        self.test_pulls = 0

    def route(self, build: Build) -> list[Base]:
        hub = self.world.hub.limiter.host
        credentials: tuple[str | None, str | None] = (None, None)
        if self.mode is Mode.LOGGED_IN:
            # Teams share accounts by service: one account when there is one (the seeds' setup).
            credentials = self.accounts[hash_service(build.service) % len(self.accounts)]
        out = []
        uses = [*((w, False) for w in base_images(build)), *((w, True) for w in build.test_runs)]
        for written, test_run in uses:  # the daemon pulls with the build's `docker login`, if any
            ref = parse(written)
            upstream = Base(hub, ref.repository, ref.digest or ref.tag or "latest", *credentials, image=written,
                            test_run=test_run)
            if self.mode is Mode.MIRRORED:
                if ref.registry != DOCKER_HUB:
                    raise ValueError(f"{written}: the simulated fleet pulls from Docker Hub only")
                assert self.world.mirror is not None  # the registry mirror dockerd and BuildKit are given
                upstream = replace(upstream, host=self.world.mirror.endpoint.host, fallback=upstream)
            out.append(upstream)
        return out

    def build(self, build: Build) -> str | None:
        """Pull every base; None on success, else "429" or the error."""
        clients: dict[tuple[str, str | None], RegistryClient] = {}

        def client(base: Base) -> RegistryClient:
            key = (base.host, base.username)
            if key not in clients:  # a fresh CodeBuild container: new client, new tokens
                clients[key] = RegistryClient(base.host, username=base.username, password=base.password,
                                              pool_size=2, max_retry_wait=0)
            return clients[key]

        try:
            for base in self.route(build):
                try:
                    digest = pull(client(base), base.repository, base.reference, build.platform)
                except RegistryError as err:
                    if base.fallback is None or err.status != 404:
                        raise
                    digest = pull(client(base.fallback), base.repository, base.reference, build.platform)
                self.resolved.append((self.world.clock(), catalog_name(base.image), digest))
                self.pulled[catalog_name(base.image)] += 1
                self.test_pulls += base.test_run
        except TooManyRequests:
            return "429"
        except RegistryError as err:
            return str(err)
        finally:
            for each in clients.values():
                each.http.clear()
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
    config = mirror_config(list(day.images), schedule) if mode is Mode.MIRRORED else None
    with World(clock, template, policy=policy, users=users, mirror=config) as world:
        fleet = Fleet(world, mode, team_accounts)
        sync = None
        prefill_heads = 0
        if config is not None:
            sync = _Sync(world, config)
            sync.first_fill(clock, result, day)
            world.hub.limiter.wait_idle()
            usage = world.hub.limiter.usage()
            result.prefill_gets = sum(u.manifest_gets for u in usage.values())
            result.prefill_bytes = sum(u.bytes_served for u in usage.values())
            prefill_heads = usage[MIRROR_USER].manifest_heads if MIRROR_USER in usage else 0
            result.planner_runs = result.copier_tasks = result.copier_bytes = 0
            result.plan_seconds = 0.0
        events = _events(day, mode, schedule)
        bumped: list[_Bumped] = []
        served: dict[int, float] = {}  # bump index -> when the mirror's tag first was a copy of the new digest
        for when, kind, item in events:
            clock.set(when)
            if kind == "bump":
                old, _ = world.hub.manifests_of(item.image)
                world.hub.bump(item)
                if world.mirror is not None:
                    new, fetched = world.hub.manifests_of(item.image)
                    bumped.append(_Bumped(item, old, new, fetched, world.mirror.serving(item.image)[0]))
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
                for index, entry in enumerate(bumped):
                    if index not in served and world.mirror.serving(entry.bump.image)[1] == entry.new:
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
        if world.mirror is not None:
            result.mirror_heads = usage[MIRROR_USER].manifest_heads - prefill_heads
            result.served = world.mirror.endpoint.served()
            result.cached_images = world.mirror.endpoint.cached_images()
            _staleness(world, bumped, served, result)
    return result


@dataclass(frozen=True)
class _Bumped:
    bump: Bump
    old: str  # Docker Hub's digest of the tag before the bump
    new: str  # and after
    fetched: set[str]  # the manifests a direct copy of `new` fetches
    old_served: str | None  # the digest builds pulling the tag got from the mirror before the bump


def _events(day: Day, mode: Mode, schedule: str) -> list[tuple[float, str, Any]]:
    """Bumps, then syncs, then builds, at equal times; in time order. Syncs run from midnight to
    midnight inclusive: the next day's first run shows how stale the day's last bump got."""
    events: list[tuple[float, int, str, Any]] = [(b.time, 0, "bump", b) for b in day.bumps]
    if mode is Mode.MIRRORED:
        period = schedule_period(schedule)
        events += [(n * period, 1, "sync", None) for n in range(int(day.length // period) + 1)]
    events += [(b.time, 2, "build", b) for b in day.builds]
    events.sort(key=lambda e: (e[0], e[1]))
    return [(t, kind, item) for t, _, kind, item in events]


class _Sync:
    """The scheduled planner and copier, in process: the engine's plan() and run_tasks(), connected
    as the Lambdas connect (`connect`), with "Docker Hub" at the limiter and "ECR" on loopback."""

    FIRST_FILL_START = -2 * 3600.0  # 22:00 the day before
    FIRST_FILL_EVERY = 600.0  # a run every 10 minutes until nothing is deferred

    def __init__(self, world: World, config: Config) -> None:
        mirror = world.mirror
        assert mirror is not None
        self.world = world
        self.config = config
        self.endpoints = connect(mirror.ecr.host, upstreams={"docker.io": world.hub.limiter.host},
                                 credentials={"docker.io": "simulation"},
                                 secrets=_Secrets(MIRROR_USER, mirror.password))

    def first_fill(self, clock: ManualClock, result: Result, day: Day) -> None:
        """The mirror was running before this day: runs from 22:00 the day before until nothing is
        deferred. The planner assumes an index it has not seen lists 16 manifests, or 2 per selected
        platform, and keeps the quota reserve, so the budget may spread a first fill over runs. Then
        the cache rule holds what yesterday's builds pulled through it: each `fleet.UNLISTED` image."""
        runs = int(-self.FIRST_FILL_START // self.FIRST_FILL_EVERY)
        for n in range(runs):
            clock.set(self.FIRST_FILL_START + n * self.FIRST_FILL_EVERY)
            if not self.run(clock, result)["deferred"]:
                break
        else:
            result.errors.append(f"first fill still deferred work after {runs} runs")
        assert self.world.mirror is not None
        cache = RegistryClient(self.world.mirror.ecr.host)
        for image in day.images:
            if image.name in UNLISTED:
                cache.get_manifest(f"{PTC_PREFIX}/{image.repository}", image.tag)  # the cache fills the tag

    def run(self, clock: ManualClock, result: Result) -> Counter[str]:
        started = time.monotonic()
        plan = plan_sync(self.config, self.endpoints, now=clock())  # whose turn it is to list referrers
        result.plan_seconds += time.monotonic() - started
        result.planner_runs += 1
        tasks = plan.tasks()
        result.copier_tasks += len(tasks)
        outcomes = run_tasks(tasks, self.endpoints)
        counts = Counter(str(item.action) for item in plan.items)
        counts.update(f"task {o.status}" for o in outcomes)
        result.copier_bytes += sum(o.bytes_copied for o in outcomes)
        for outcome in outcomes:
            if outcome.status not in ("copied", "referrers"):  # "referrers": a tag's turn to list its referrers
                result.errors.append(f"sync at {clock():.0f}s: {outcome.task.ref}: {outcome.status} {outcome.error}")
        result.syncs.append((clock(), counts))
        return counts


def _staleness(world: World, bumped: list[_Bumped], served: dict[int, float], result: Result) -> None:
    """Per bump: how long until the mirror's tag was a copy of the new digest, and how many builds
    after the bump still got the image the mirror had before it. Also counts the mirror account's
    GETs of each digest."""
    for pull_ in world.hub.limiter.pulls():
        if pull_.identity == MIRROR_USER and pull_.status == 200 and pull_.digest and pull_.time >= 0:
            result.mirror_fetches[pull_.digest] += 1
    result.expected_gets = sum(len(entry.fetched) for entry in bumped)
    for index, entry in enumerate(bumped):
        bump = entry.bump
        stale = sum(1 for t, name, digest in result.resolved
                    if name == bump.image.name and t >= bump.time and digest == entry.old_served)
        moved = served.get(index)
        result.staleness.append(Staleness(bump.image.name, bump.time, entry.old, entry.new,
                                          None if moved is None else moved - bump.time, stale))

"""A small simulated day (tens of builds in four simulated hours, seconds): the mirror removes the 429s, spends exactly
one upstream manifest GET per manifest the day's upstream tag bumps made the direct copies fetch, builds get a
bumped tag's new image from the first scheduled sync after the bump (the default schedule, so within its
interval), the images test commands `docker run` cost Docker Hub nothing, and what mirror.yaml does not list
comes from the cache rule.

How the GETs are counted: every image mirror.yaml lists is a direct copy, which fetches the new index and,
of the platforms it lists, only the selected ones (linux/amd64 and linux/arm64): each one's image manifest
and, when the index has one, the attestation manifest describing it; a bumped single-manifest tag costs that
manifest. Each must be fetched from "Docker Hub" (a GET the limiter answered 200 to the mirror's account)
exactly once during the day, and nothing else may be: every other check of the engine and the cache is a HEAD.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ecr_mirror_cdk.config import DEFAULT_SCHEDULE
from tests.simulate.fleet import MIRRORED_PLATFORMS, UNLISTED, Day, plan_day
from tests.simulate.run import Mode, Result, schedule_period, simulate
from tests.simulate.world import seeded
from tests.support.limiter import SIX_HOURS

# An anonymous limit forty builds cross, as five hundred cross Docker Hub's 100; the mirror's
# account keeps Docker Hub's 200, which its first fill fits in two runs with the reserve it leaves.
POLICY = replace(SIX_HOURS, anonymous=20)
# Two also `docker run` a database; "reports" pulls acme/build-tools, which mirror.yaml does not list.
SERVICES = ("orders-api", "storefront", "search-svc", "deploy-tools", "reports")
SYNC_PERIOD = schedule_period(DEFAULT_SCHEDULE)
DAY_LENGTH = 4 * 3600.0


@pytest.fixture(scope="module")
def day() -> Day:
    # The day's shape squeezed into four hours: 25 syncs on the default schedule instead of 145.
    return plan_day(40, seed=11, services=SERVICES, bumps=2, length=DAY_LENGTH)


@pytest.fixture(scope="module")
def template(day: Day) -> Iterator[Path]:
    with seeded(day) as path:
        yield path


def needed_manifests(day: Day) -> int:
    total = 0
    for bump in day.bumps:
        image = bump.image
        total += 1 + len(MIRRORED_PLATFORMS) * (2 if image.attestations else 1) if image.multi_platform else 1
    return total


def first_sync_after(when: float) -> float:
    return math.ceil(when / SYNC_PERIOD) * SYNC_PERIOD


def resolved_after(result: Result, image: str, when: float) -> set[str]:
    """Digests builds got for the bumped image's tag at or after `when`."""
    return {digest for t, name, digest in result.resolved if name == image and t >= when}


def test_the_small_day_has_tag_bumps_of_multi_platform_images_with_attestations(day: Day) -> None:
    assert len(day.builds) == 40 and len(day.bumps) == 2
    assert all(b.image.multi_platform and b.image.attestations for b in day.bumps)
    assert needed_manifests(day) == 2 * (1 + 2 * 2)  # two of four platforms mirrored, each with an attestation


@pytest.fixture(scope="module")
def mirrored(day: Day, template: Path) -> Result:
    """The day with the fleet pulling through the build host's endpoint from the direct copies the
    engine keeps current (and the cache rule for the rest), with two upstream tag bumps."""
    return simulate(day, Mode.MIRRORED, template=template, policy=POLICY)


def test_mirrored_builds_never_fail_and_each_changed_manifest_costs_one_upstream_pull(
        day: Day, mirrored: Result) -> None:
    # Given the fleet pulling through the endpoint from the direct copies the engine keeps current
    # When the day runs, with two upstream tag bumps (the `mirrored` fixture)
    result = mirrored
    # Then no build fails, and the day's upstream pulls are exactly the bumped manifests, once each
    assert (result.builds, result.failed_429, result.failed_other) == (40, 0, 0), result.errors
    assert result.errors == []
    assert result.expected_gets == needed_manifests(day)
    assert result.upstream_gets == needed_manifests(day)
    assert sum(result.mirror_fetches.values()) == needed_manifests(day)
    assert set(result.mirror_fetches.values()) == {1}


def test_after_a_bump_and_one_scheduled_sync_builds_get_the_new_image(day: Day, mirrored: Result) -> None:
    # Given the day's bumps on the default schedule
    assert mirrored.schedule == DEFAULT_SCHEDULE and SYNC_PERIOD <= 15 * 60
    assert [s.image for s in mirrored.staleness] == [b.image.name for b in day.bumps]
    for bump, seen in zip(day.bumps, mirrored.staleness, strict=True):
        synced = first_sync_after(bump.time)
        # Then the mirror's tag is a copy of the new digest by the first sync after the bump: within the interval
        assert seen.served_after is not None and bump.time + seen.served_after <= synced, seen
        assert seen.served_after <= SYNC_PERIOD
        # And every build from then on gets one image for the tag, not the one it got before the bump
        after = resolved_after(mirrored, bump.image.name, synced)
        before = {d for t, name, d in mirrored.resolved if name == bump.image.name and t < bump.time}
        assert len(after) == 1 and not after & before, (after, before)


def test_configured_images_come_from_direct_copies_and_the_rest_from_the_cache_rule(mirrored: Result) -> None:
    # Given a mirror.yaml that lists every image the fleet pulls but acme/build-tools
    assert UNLISTED == ("acme/build-tools:2024.11",) and mirrored.image_pulls["acme/build-tools:2024.11"] > 0
    # Then the endpoint answered that one from the cache rule, every other from a direct copy, nothing fell back
    assert mirrored.cached_images == set(UNLISTED)
    assert mirrored.served["direct"] > 0 and mirrored.served["cache"] > 0
    assert mirrored.served["fell back"] == 0


def test_direct_builds_fail_with_429_once_the_shared_ip_uses_up_its_window(day: Day, template: Path) -> None:
    # Given the same builds pulling anonymously from one IP
    # When the day runs
    result = simulate(day, Mode.DIRECT, template=template, policy=POLICY)

    # Then builds fail with 429, and only after the IP made its allowance of pulls
    assert result.failed_429 > 0 and result.failed_other == 0, result.errors
    assert result.throttled == result.failed_429
    first_failure = next(gets for _, gets, failed in result.timeline if failed)
    assert first_failure >= POLICY.anonymous
    assert result.upstream_gets > needed_manifests(day)


def test_test_commands_docker_run_their_images_through_the_mirror_at_no_docker_hub_pull(mirrored: Result) -> None:
    # Given builds whose test commands `docker run` a database image, with the mirror set up
    # When the day runs (the `mirrored` fixture)
    # Then they pulled those images, and "Docker Hub" served no manifest to any build: not for a
    # FROM, not for a `docker run`; only the mirror's account fetched, once per changed manifest
    assert mirrored.test_pulls > 0
    assert (mirrored.test_hub_pulls, mirrored.build_hub_gets) == (0, 0)
    assert {"postgres:16-alpine", "redis:7.4-alpine"} <= set(mirrored.image_pulls)


def test_without_the_mirror_test_commands_pull_from_docker_hub(day: Day, template: Path) -> None:
    # Given the same builds logged in to one Docker Hub account, no mirror
    result = simulate(day, Mode.LOGGED_IN, template=template, policy=POLICY)

    # Then every test-time `docker run` is a Docker Hub pull counted against that account
    assert result.failed_429 == 0 and result.test_pulls > 0, result.errors
    assert result.test_hub_pulls == result.test_pulls
    assert result.build_hub_gets == result.upstream_gets

"""A small simulated day (tens of builds, seconds): the mirror removes the 429s, and spends exactly
one upstream manifest GET per manifest the day's upstream tag bumps made it need.

How that is counted: a bumped multi-platform tag needs its new index, and for each mirrored
platform (linux/amd64, linux/arm64) its image manifest plus, when the index has one, the attestation
manifest describing it; a bumped single-manifest tag needs that manifest. Each must be fetched from
"Docker Hub" (a GET the limiter answered 200 to the mirror's account) exactly once during the day,
and nothing else may be: every other check of the engine and the pull-through cache is a HEAD.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.simulate.fleet import MIRRORED_PLATFORMS, Day, plan_day
from tests.simulate.run import Mode, simulate
from tests.simulate.world import Limits, seeded

# An anonymous limit forty builds cross, as five hundred cross Docker Hub's 100; the mirror's
# account keeps Docker Hub's 200, which its first fill (31 pulls) fits with the reserve it leaves.
LIMITS = Limits(anonymous=20)
SERVICES = ("orders-api", "storefront", "search-svc", "deploy-tools")


@pytest.fixture(scope="module")
def day() -> Day:
    return plan_day(40, seed=11, services=SERVICES, bumps=2)


@pytest.fixture(scope="module")
def template(day: Day) -> Iterator[Path]:
    with seeded(day) as path:
        yield path


def needed_manifests(day: Day) -> int:
    total = 0
    for bump in day.bumps:
        image = bump.image
        platforms = [p for p in image.platforms if p in MIRRORED_PLATFORMS]
        total += 1 + len(platforms) * (2 if image.attestations else 1) if image.multi_platform else 1
    return total


def test_the_small_day_has_tag_bumps_of_multi_platform_images_with_attestations(day: Day) -> None:
    assert len(day.builds) == 40 and len(day.bumps) == 2
    assert all(b.image.multi_platform and b.image.attestations for b in day.bumps)
    assert needed_manifests(day) == 2 * (1 + 2 * 2)


def test_mirrored_builds_never_fail_and_each_changed_manifest_costs_one_upstream_pull(
        day: Day, template: Path) -> None:
    # Given the fleet resolving its bases through the redirect to a mirror the engine keeps current
    # When the day runs, with two upstream tag bumps
    result = simulate(day, Mode.MIRRORED, template=template, limits=LIMITS)

    # Then no build fails, and the day's upstream pulls are exactly the bumped manifests, once each
    assert (result.builds, result.failed_429, result.failed_other) == (40, 0, 0), result.errors
    assert result.errors == []
    assert result.expected_gets == needed_manifests(day)
    assert result.upstream_gets == needed_manifests(day)
    assert sum(result.mirror_fetches.values()) == needed_manifests(day)
    assert set(result.mirror_fetches.values()) == {1}
    assert all(s.complete_after is not None and s.complete_after <= 6 * 3600 for s in result.staleness)


def test_direct_builds_fail_with_429_once_the_shared_ip_uses_up_its_window(day: Day, template: Path) -> None:
    # Given the same builds pulling anonymously from one IP
    # When the day runs
    result = simulate(day, Mode.DIRECT, template=template, limits=LIMITS)

    # Then builds fail with 429, and only after the IP made its allowance of pulls
    assert result.failed_429 > 0 and result.failed_other == 0, result.errors
    assert result.throttled == result.failed_429
    first_failure = next(gets for _, gets, failed in result.timeline if failed)
    assert first_failure >= LIMITS.anonymous
    assert result.upstream_gets > needed_manifests(day)

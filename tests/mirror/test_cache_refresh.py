"""A moved upstream tag reaches the pull-through cache in one sync, against the ECR-faithful stand-in
(tests/support/ptc.py): ECR would serve the old image by tag for up to 24 hours."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lambdas.mirror.endpoints import Cache, Endpoints
from lambdas.mirror.plan import Action, Task, plan
from lambdas.mirror.registry import RegistryClient
from lambdas.mirror.sync import run_task, run_tasks
from tests.conftest import Clock
from tests.engine.checks import skopeo_raw_digest
from tests.support.images import push_image
from tests.support.ptc import PullThroughCache
from tests.support.registry import RegistryServer

from .support import config

REPO, CACHED, TAG = "library/python", "docker-hub/library/python", "3.13-slim"
PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7")
IMAGE = {"source": "python", "tags": [TAG], "platforms": ["linux/amd64"]}


def digest_at(host: str, repository: str, tag: str) -> str | None:
    info = RegistryClient(host).head_manifest(repository, tag)
    return info.digest if info else None


@pytest.fixture
def hub(registry_factory: Callable[..., RegistryServer]) -> RegistryServer:
    server = registry_factory("hub")
    push_image(server.host, REPO, TAG, platforms=PLATFORMS, attestations=True, seed=1)
    return server


@pytest.fixture
def ptc(hub: RegistryServer, ptc_factory: Callable[..., PullThroughCache]) -> PullThroughCache:
    return ptc_factory(hub.host)


def ecr_like(hub: RegistryServer, ptc: PullThroughCache) -> tuple[Endpoints, RegistryClient]:
    """The cache as the Lambdas see ECR: its tags read from its store (DescribeImages), never pulled."""
    client = RegistryClient(ptc.host)
    cache = Cache(client, keeps_prefix=True,
                  cached_digest=lambda repository, tag: digest_at(ptc.storage.host, repository, tag))
    return Endpoints(RegistryClient(hub.host), sources=lambda _: RegistryClient(hub.host),
                     caches={"docker-hub": cache}), client


def test_one_sync_moves_the_cached_tag_to_the_new_upstream_digest_and_the_next_plan_skips(
        hub: RegistryServer, ptc: PullThroughCache) -> None:
    # Given a filled cache, and then the upstream tag moved
    cfg = config(IMAGE)
    endpoints, client = ecr_like(hub, ptc)
    old = run_tasks(plan(cfg, endpoints).tasks(), endpoints)[0].destination_digest
    new = push_image(hub.host, REPO, TAG, platforms=PLATFORMS, attestations=True, seed=2)
    gets, client_gets = len(hub.manifest_gets()), client.counters[("GET", "manifest")]

    # When one sync runs
    (item,) = plan(cfg, endpoints).items
    (outcome,) = run_tasks([item.task], endpoints)

    # Then the cache's tag is the new digest, for storage and for what builds pull, now
    assert (item.action, item.task.destination_digest, old != new) == (Action.COPY, old, True)
    assert (outcome.status, outcome.source_digest, outcome.manifests_put) == ("copied", new, 1)
    assert skopeo_raw_digest(ptc.storage.host, CACHED, TAG) == new
    assert digest_at(ptc.host, CACHED, TAG) == new
    # the new index and each manifest it lists (3 platforms, 3 attestations), each fetched once
    assert len(hub.manifest_gets()) - gets == 7
    # we pulled only the index and the kept platform's manifest and attestation through the cache
    assert client.counters[("GET", "manifest")] - client_gets == 3
    # And the next run skips, with no manifest GET upstream
    gets = len(hub.manifest_gets())
    assert [i.action for i in plan(cfg, endpoints).items] == [Action.SKIP]
    assert len(hub.manifest_gets()) == gets


def test_a_tag_already_at_the_planned_digest_is_not_put_again(
        hub: RegistryServer, ptc: PullThroughCache, clock: Clock) -> None:
    endpoints, _ = ecr_like(hub, ptc)
    old = run_tasks(plan(config(IMAGE), endpoints).tasks(), endpoints)[0].destination_digest
    new = push_image(hub.host, REPO, TAG, platforms=PLATFORMS, seed=3)
    clock.now += 86400
    assert digest_at(ptc.host, CACHED, TAG) == new  # a build's pull after 24 h refreshed the cache itself

    tag_puts = len(puts_of_the_tag(ptc))

    outcome = run_task(Task("python", TAG, CACHED, "docker-hub", new, old, ("linux/amd64",)), endpoints)

    assert (outcome.destination_digest, outcome.manifests_put) == (new, 0)
    assert len(puts_of_the_tag(ptc)) == tag_puts


def puts_of_the_tag(ptc: PullThroughCache) -> list[object]:
    return [r for r in ptc.storage.requests() if r.method == "PUT" and r.path.endswith(f"/manifests/{TAG}")]


def test_a_tag_moved_elsewhere_since_planning_is_left_alone(
        hub: RegistryServer, ptc: PullThroughCache, clock: Clock) -> None:
    # Given a task planned for `planned` while the cache held `old`; since then the upstream moved
    # on to `newer` and the cache picked that up (a build's pull after 24 h)
    endpoints, _ = ecr_like(hub, ptc)
    old = run_tasks(plan(config(IMAGE), endpoints).tasks(), endpoints)[0].destination_digest
    planned = push_image(hub.host, REPO, TAG, kind="docker-v2", seed=4)
    newer = push_image(hub.host, REPO, TAG, kind="docker-v2", seed=5)
    clock.now += 86400
    assert digest_at(ptc.host, CACHED, TAG) == newer

    # When the delayed task runs
    outcome = run_task(Task("python", TAG, CACHED, "docker-hub", planned, old), endpoints)

    # Then the planned image is cached by digest, and the tag is not moved back
    assert (outcome.status, outcome.manifests_put, outcome.destination_digest) == ("copied", 0, newer)
    assert digest_at(ptc.storage.host, CACHED, TAG) == newer
    assert digest_at(ptc.storage.host, CACHED, planned) == planned


def test_a_task_without_a_planned_digest_warms_by_tag_as_before(hub: RegistryServer, ptc: PullThroughCache) -> None:
    # Given a cache a build filled by pulling the tag, and then the upstream tag moved
    endpoints, _ = ecr_like(hub, ptc)
    old = digest_at(ptc.host, CACHED, TAG)
    push_image(hub.host, REPO, TAG, platforms=PLATFORMS, seed=6)

    outcome = run_task(Task("python", TAG, CACHED, "docker-hub", platforms=("linux/amd64",)), endpoints)

    # Within ECR's 24 hours that is the stale image: why tasks carry the digest
    assert (outcome.source_digest, outcome.manifests_put) == (old, 0)
    assert digest_at(ptc.storage.host, CACHED, TAG) == old

"""What a sync spends at a rate-limited "Docker Hub" (tests/support/limiter.py): never below the
reserve, and one set of manifest GETs per new digest however many tags share it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from lambdas.mirror.aws.connect import connect
from lambdas.mirror.oci.registry import RegistryClient
from lambdas.mirror.planning.plan import plan
from lambdas.mirror.planning.sync import run_tasks
from lambdas.mirror.planning.task import Action
from tests.support.images import Pusher, push_image
from tests.support.limiter import SIX_HOURS, Limiter
from tests.support.registry import RegistryServer

from .support import config

TWELVE_PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6", "linux/386", "linux/ppc64le",
                    "linux/s390x", "linux/riscv64", "linux/mips64le", "linux/loong64", "linux/arm/v5", "windows/amd64")


def test_an_index_that_grew_from_4_to_24_entries_stops_at_the_reserve_whatever_the_plan_estimated(
        registry_factory: Callable[..., RegistryServer]) -> None:
    # Given a mirrored tag whose index had 4 entries (2 platforms, 2 attestations)
    hub, destination = registry_factory("hub"), registry_factory("destination")
    old = push_image(hub.host, "library/python", "3.13", attestations=True, seed=1)
    cfg = config({"source": "python", "tags": ["3.13"], "target": "mirror/python"},
                 pull_through_cache=[], sync={"quota_reserve": 20}, referrers=False)
    first = connect(destination.host, upstreams={"docker.io": hub.host})
    assert [o.status for o in run_tasks(plan(cfg, first).tasks(), first)] == ["copied"]
    # ... that upstream now lists 12 platforms and their 12 attestations, with 30 pulls left
    push_image(hub.host, "library/python", "3.13", platforms=TWELVE_PLATFORMS, attestations=True, seed=2)
    with Limiter(hub.host, policy=replace(SIX_HOURS, anonymous=30)) as limiter:
        endpoints = connect(destination.host, upstreams={"docker.io": limiter.host})

        # When the plan, estimating from the old index, allows the copy and the sync runs it
        planned = plan(cfg, endpoints)
        (outcome,) = run_tasks(planned.tasks(), endpoints)
        left = limiter.quota("127.0.0.1").remaining

    # Then the copy stopped at the reserve: deferred, no pull below it (concurrent GETs are counted
    # while in flight, so it may stop a few short), the old tag in place
    assert [(i.action, i.task.cost) for i in planned.items] == [(Action.COPY, 5)]
    assert outcome.status == "deferred"
    assert "reserve 20" in outcome.error
    assert 20 <= left < 25
    assert RegistryClient(destination.host).head_manifest("mirror/python", "3.13").digest == old


def test_the_floor_holds_with_the_quota_learnt_from_a_head_when_the_process_saw_none(
        registry_factory: Callable[..., RegistryServer]) -> None:
    # Given a fresh copier process (a Lambda) that has seen no rate-limit header, and 20 pulls left
    hub, destination = registry_factory("hub"), registry_factory("destination")
    push_image(hub.host, "library/python", "3.13", kind="docker-v2")
    cfg = config({"source": "python", "tags": ["3.13"], "target": "mirror/python"},
                 pull_through_cache=[], sync={"quota_reserve": 20})
    with Limiter(hub.host, policy=replace(SIX_HOURS, anonymous=20)) as limiter:
        planned = plan(cfg, connect(destination.host, upstreams={"docker.io": limiter.host}))
        task = planned.items[0].task  # planned before the quota ran down to the reserve

        # When its task runs on clients that know nothing yet
        (outcome,) = run_tasks([task], connect(destination.host, upstreams={"docker.io": limiter.host}))
        gets = limiter.usage()["127.0.0.1"].manifest_gets

    # Then a free HEAD told it the quota, and no GET was sent
    assert (outcome.status, gets) == ("deferred", 0)


def test_300_new_tags_of_one_digest_cost_one_source_get_and_all_get_tagged(
        registry_factory: Callable[..., RegistryServer]) -> None:
    # Given 300 tags upstream that point at the same image manifest
    hub, destination = registry_factory("hub"), registry_factory("destination")
    digest = push_image(hub.host, "team/tool", "t0", kind="oci-manifest")
    pusher = Pusher(hub.host)
    body = pusher.get_manifest("team/tool", digest)
    for n in range(1, 300):
        pusher.manifest("team/tool", f"t{n}", body, "application/vnd.oci.image.manifest.v1+json")
    cfg = config({"source": "team/tool", "tag_regex": r"t\d+", "target": "mirror/tool"}, pull_through_cache=[],
                 sync={"quota_reserve": 0}, referrers=False)
    with Limiter(hub.host, policy=replace(SIX_HOURS, anonymous=100)) as limiter:
        endpoints = connect(destination.host, upstreams={"docker.io": limiter.host})

        # When they are planned and synced
        planned = plan(cfg, endpoints)
        outcomes = run_tasks(planned.tasks(), endpoints)
        gets = [p for p in limiter.pulls() if p.status == 200]

    # Then the plan counts one GET, one task copies it, one GET is made, and every tag lands on it
    assert planned.counts() == {"copy": 300}
    assert planned.quotas["docker.io"].planned == 1
    assert [(o.status, len(o.task.tags)) for o in outcomes] == [("copied", 300)]
    assert len(gets) == 1
    destination_client = RegistryClient(destination.host)
    assert len(destination_client.list_tags("mirror/tool")) == 300
    assert {destination_client.head_manifest("mirror/tool", f"t{n}").digest for n in (0, 150, 299)} == {digest}

"""Planning and copying against real loopback registries (CNCF distribution) through Endpoints."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

import pytest

from lambdas.mirror.aws.connect import connect
from lambdas.mirror.oci.errors import RegistryError
from lambdas.mirror.oci.registry import RegistryClient
from lambdas.mirror.planning.plan import plan
from lambdas.mirror.planning.sync import run_tasks
from lambdas.mirror.planning.task import Action
from tests.engine.checks import skopeo_raw_digest
from tests.support.faults import FaultProxy
from tests.support.images import push_image
from tests.support.limiter import SIX_HOURS, Limiter
from tests.support.registry import RegistryServer

from .support import config

PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7")


def test_unchanged_resync_makes_no_manifest_get_at_the_source(
        registry_factory: Callable[..., RegistryServer]) -> None:
    source, destination = registry_factory("source"), registry_factory("destination")
    for n, kind in enumerate(("oci-index", "docker-list", "oci-manifest", "docker-v2")):
        push_image(source.host, "team/app", f"v{n}", kind=kind, attestations=kind == "oci-index", seed=n)
    cfg = config({"source": f"{source.host}/team/app", "tag_regex": "v[0-9]+"})
    endpoints = connect(destination.host)
    first = run_tasks(plan(cfg, endpoints).tasks(), endpoints)
    assert [o.status for o in first] == ["copied"] * 4
    gets_before = len(source.manifest_gets())

    again = plan(cfg, connect(destination.host))

    assert [i.action for i in again.items] == [Action.SKIP] * 4
    assert len(source.manifest_gets()) - gets_before == 0


def test_tag_regex_and_platform_filter_copy_only_matching_tags_and_platforms(
        registry_factory: Callable[..., RegistryServer]) -> None:
    source, destination = registry_factory("source"), registry_factory("destination")
    for n, tag in enumerate(("1.0", "1.1", "1.1-rc", "2.0")):
        push_image(source.host, "team/app", tag, platforms=PLATFORMS, attestations=True, seed=n)
    cfg = config({"source": f"{source.host}/team/app", "tag_regex": r"1\.\d+", "platforms": ["linux/arm64"]})
    repository = cfg.images[0].repository

    outcomes = run_tasks(plan(cfg, connect(destination.host)).tasks(), connect(destination.host))

    assert sorted(o.task.tag for o in outcomes if o.status == "copied") == ["1.0", "1.1"]
    client = RegistryClient(destination.host)
    assert sorted(client.list_tags(repository)) == ["1.0", "1.1"]
    index = json.loads(client.get_manifest(repository, "1.0")[0])
    platforms = [m["platform"] for m in index["manifests"]]
    assert {"architecture": "arm64", "os": "linux"} in platforms and len(platforms) == 2  # arm64 + its attestation
    gets_before = len(source.manifest_gets())
    assert [i.action for i in plan(cfg, connect(destination.host)).items] == [Action.SKIP] * 2
    assert len(source.manifest_gets()) == gets_before


def test_a_changed_platform_filter_copies_again(registry_factory: Callable[..., RegistryServer]) -> None:
    source, destination = registry_factory("source"), registry_factory("destination")
    push_image(source.host, "team/app", "1.0", platforms=PLATFORMS)
    image = {"source": f"{source.host}/team/app", "tags": ["1.0"], "platforms": ["linux/arm64"]}
    run_tasks(plan(config(image), connect(destination.host)).tasks(), connect(destination.host))

    (item,) = plan(config({**image, "platforms": ["linux/amd64"]}), connect(destination.host)).items

    assert item.action is Action.COPY


def test_another_mirrored_repository_lends_its_blobs_by_cross_repository_mount(
        registry_factory: Callable[..., RegistryServer]) -> None:
    source, destination = registry_factory("source"), registry_factory("destination")
    push_image(source.host, "team/base", "1", kind="docker-v2", seed=7)
    push_image(source.host, "team/copy", "1", kind="docker-v2", seed=7)  # same layers, another repository
    cfg = config({"source": f"{source.host}/team/base", "tags": ["1"]},
                 {"source": f"{source.host}/team/copy", "tags": ["1"]})

    base, copy = run_tasks(plan(cfg, connect(destination.host)).tasks(), connect(destination.host))

    assert (base.blobs_copied, base.blobs_mounted) == (3, 0)
    assert (copy.blobs_copied, copy.blobs_mounted) == (0, 3)


def test_a_task_queued_twice_is_copied_once_and_the_duplicate_costs_no_source_request(
        registry_factory: Callable[..., RegistryServer]) -> None:
    # Given one planned copy, queued twice (two overlapping planner runs, or SQS delivering a message twice)
    hub, destination = registry_factory("hub"), registry_factory("destination")
    push_image(hub.host, "library/python", "3.13-slim", platforms=PLATFORMS, attestations=True)
    cfg = config({"source": "python", "tags": ["3.13-slim"], "platforms": ["linux/amd64"]})
    endpoints = connect(destination.host, upstreams={"docker.io": hub.host})
    (item,) = plan(cfg, endpoints).items
    (first,) = run_tasks([item.task], endpoints)
    requests = len(hub.requests())

    # When the duplicate runs
    (second,) = run_tasks([item.task], endpoints)

    # Then it finds the copy done with one destination read, and asks the source nothing
    assert (first.status, second.status) == ("copied", "skipped")
    assert len(hub.requests()) == requests


def test_a_429_storm_defers_the_upstream_and_nothing_is_retried(
        registry_factory: Callable[..., RegistryServer]) -> None:
    source, destination = registry_factory("source"), registry_factory("destination")
    for tag in ("a", "b", "c"):
        push_image(source.host, "team/app", tag, kind="oci-manifest", seed=ord(tag))
    storm = FaultProxy(source.host).start()
    try:
        cfg = config({"source": f"{storm.host}/team/app", "tags": ["a", "b", "c"]})
        tasks = plan(cfg, connect(destination.host)).tasks()
        storm.add("status", "/manifests/", method="*", status=429, times=-1, headers={"Retry-After": "120"})
        seen = len(storm.seen)

        outcomes = run_tasks(tasks, connect(destination.host))
        throttled = [s for s in storm.seen[seen:] if "/manifests/" in s.path]
        replanned = plan(cfg, connect(destination.host), workers=1)
    finally:
        storm.stop()

    assert [(o.status, o.retry_after) for o in outcomes] == [("deferred", 120.0)] * 3
    assert len(throttled) == 1  # the first GET; Retry-After is not slept through, nothing asked again
    assert [i.action for i in replanned.items] == [Action.DEFERRED] * 3
    assert RegistryClient(destination.host).head_manifest(cfg.images[0].repository, "a") is None


def test_docker_hub_quota_budget_keeps_the_reserve_and_defers_the_rest(
        registry_factory: Callable[..., RegistryServer]) -> None:
    hub, destination = registry_factory("hub"), registry_factory("destination")
    for n in range(8):
        push_image(hub.host, "team/tool", f"t{n}", kind="docker-v2", seed=n)
    cfg = config({"source": "team/tool", "tag_regex": "t[0-9]"}, sync={"quota_reserve": 3}, referrers=False)
    with Limiter(hub.host, policy=replace(SIX_HOURS, anonymous=8)) as limiter:
        endpoints = connect(destination.host, upstreams={"docker.io": limiter.host})
        planned = plan(cfg, endpoints)
        outcomes = run_tasks(planned.tasks(), endpoints)
        pulls = [p for p in limiter.pulls() if p.status == 200]

    assert planned.counts() == {"copy": 5, "deferred": 3}
    assert planned.quotas["docker.io"].remaining == 8
    assert [o.status for o in outcomes] == ["copied"] * 5
    assert len(pulls) == 5


def test_the_first_run_copies_into_repositories_that_do_not_exist_until_the_copy_pushes(
        registry_factory: Callable[..., RegistryServer]) -> None:
    # Given two images and a destination holding no repository yet (ECR creates each on its first push, from the
    # mirror prefix's CREATE_ON_PUSH template), each image offered the other's repository to mount from
    source, destination = registry_factory("source"), registry_factory("destination")
    digests = {name: push_image(source.host, f"team/{name}", "1", kind="docker-v2", seed=seed)
               for name, seed in (("base", 11), ("tool", 12))}
    cfg = config(*({"source": f"{source.host}/team/{name}", "tags": ["1"]} for name in digests))
    repositories = [image.repository for image in cfg.images]
    for repository in repositories:
        with pytest.raises(RegistryError) as missing:
            RegistryClient(destination.host).list_tags(repository)
        assert missing.value.status == 404  # NAME_UNKNOWN: no such repository

    # When the planner plans and the copier copies
    planned = plan(cfg, connect(destination.host))
    outcomes = run_tasks(planned.tasks(), connect(destination.host))

    # Then a missing repository is a tag to copy, not a failure, and the copy lands digest-exact
    assert [(i.action, i.reason) for i in planned.items] == [(Action.COPY, "new")] * 2
    assert [o.status for o in outcomes] == ["copied"] * 2
    for name, repository in zip(digests, repositories, strict=True):
        assert skopeo_raw_digest(destination.host, repository, "1") == digests[name]
    # and, as with `docker push`, every request before a repository's first write is a read it answered 404
    # (the engine takes that as "absent"), and that first write is the blob upload that creates it.
    for repository in repositories:
        mine = [r for r in destination.requests() if r.path.startswith(f"/v2/{repository}/")]
        first = next(n for n, r in enumerate(mine) if r.method not in ("GET", "HEAD"))
        assert mine[first].method == "POST" and mine[first].path.startswith(f"/v2/{repository}/blobs/uploads/")
        assert {(r.method, r.status) for r in mine[:first]} <= {("HEAD", 404), ("GET", 404)}

"""The ECR-faithful pull-through cache stand-in (tests/support/ptc.py) behaves as ECR documents."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lambdas.mirror.oci.errors import RegistryError
from lambdas.mirror.oci.registry import RegistryClient
from tests.conftest import Clock
from tests.engine.checks import skopeo_inspect
from tests.support.images import push_image
from tests.support.ptc import PullThroughCache
from tests.support.registry import RegistryServer

REPO, CACHED = "library/python", "docker-hub/library/python"
DAY = 86400


def digest_at(host: str, repository: str, tag: str) -> str | None:
    info = RegistryClient(host).head_manifest(repository, tag)
    return info.digest if info else None


def upstream_manifest_gets(cache: PullThroughCache) -> list[str]:
    return [path for method, path in cache.upstream_requests if method == "GET" and "/manifests/" in path]


def test_within_the_refresh_interval_a_moved_tag_is_served_stale(
        registry_factory: Callable[..., RegistryServer], ptc_factory: Callable[..., PullThroughCache],
        clock: Clock) -> None:
    # Given a cache that pulled the tag, then the upstream tag moved
    hub = registry_factory("hub")
    old = push_image(hub.host, REPO, "3.13-slim", attestations=True, seed=1)
    cache = ptc_factory(hub.host)
    assert digest_at(cache.host, CACHED, "3.13-slim") == old
    new = push_image(hub.host, REPO, "3.13-slim", attestations=True, seed=2)
    clock.now += DAY - 1
    # When a build pulls it by tag
    _, served = RegistryClient(cache.host).get_manifest(CACHED, "3.13-slim")
    # Then the cache serves the old image, and never asked the upstream again
    assert (served.digest, new != old) == (old, True)
    assert [(m, p) for m, p in cache.upstream_requests if p.endswith("/manifests/3.13-slim")] == [
        ("HEAD", f"/v2/{REPO}/manifests/3.13-slim")]  # the first pull's check only


def test_after_the_refresh_interval_the_tag_is_checked_upstream_and_refreshed(
        registry_factory: Callable[..., RegistryServer], ptc_factory: Callable[..., PullThroughCache],
        clock: Clock) -> None:
    hub = registry_factory("hub")
    push_image(hub.host, REPO, "3.13-slim", kind="docker-v2", seed=1)
    cache = ptc_factory(hub.host)
    digest_at(cache.host, CACHED, "3.13-slim")
    new = push_image(hub.host, REPO, "3.13-slim", kind="docker-v2", seed=2)

    clock.now += DAY

    assert digest_at(cache.host, CACHED, "3.13-slim") == new
    assert digest_at(cache.storage.host, CACHED, "3.13-slim") == new
    assert skopeo_inspect(cache.host, CACHED, "3.13-slim").returncode == 0


def test_a_digest_the_cache_lacks_is_fetched_upstream_once_with_the_manifests_its_index_lists(
        registry_factory: Callable[..., RegistryServer], ptc_factory: Callable[..., PullThroughCache]) -> None:
    hub = registry_factory("hub")
    digest = push_image(hub.host, REPO, "3.13-slim", attestations=True, seed=3)
    cache = ptc_factory(hub.host)
    client = RegistryClient(cache.host)

    for _ in range(2):
        assert client.get_manifest(CACHED, digest)[1].digest == digest

    # The index, two platform manifests and their two attestations; the second GET is served as stored
    gets = upstream_manifest_gets(cache)
    assert len(gets) == 5 and gets[0] == f"/v2/{REPO}/manifests/{digest}"
    assert len(hub.manifest_gets()) == 5
    assert digest_at(cache.storage.host, CACHED, "3.13-slim") is None  # a digest pull sets no tag


def test_pushes_pass_through_to_storage(
        registry_factory: Callable[..., RegistryServer], ptc_factory: Callable[..., PullThroughCache]) -> None:
    hub = registry_factory("hub")
    cache = ptc_factory(hub.host)

    digest = push_image(cache.host, "docker-hub/team/app", "v1", seed=4)

    assert digest_at(cache.storage.host, "docker-hub/team/app", "v1") == digest
    # The pusher's "have you got it?" blob HEADs look upstream (and miss); nothing is written there
    assert {method for method, _ in cache.upstream_requests} <= {"GET", "HEAD"}
    assert [r for r in hub.requests() if r.method not in ("GET", "HEAD")] == []


def test_only_the_rule_prefix_is_served(
        registry_factory: Callable[..., RegistryServer], ptc_factory: Callable[..., PullThroughCache]) -> None:
    hub = registry_factory("hub")
    push_image(hub.host, REPO, "3.13-slim", kind="docker-v2", seed=5)
    cache = ptc_factory(hub.host)

    with pytest.raises(RegistryError) as caught:
        RegistryClient(cache.host).get_manifest(REPO, "3.13-slim")

    assert caught.value.status == 404 and "NAME_UNKNOWN" in str(caught.value)
    assert cache.upstream_requests == []


def test_with_own_repositories_other_names_are_the_registrys_own_and_never_go_upstream(
        registry_factory: Callable[..., RegistryServer], ptc_factory: Callable[..., PullThroughCache]) -> None:
    # Given a cache that also holds the registry's own repositories, and an image pushed into one
    hub = registry_factory("hub")
    push_image(hub.host, REPO, "3.13-slim", kind="docker-v2", seed=6)
    cache = ptc_factory(hub.host, own_repositories=True)
    copied = push_image(cache.host, "mirror/docker.io/library/python", "3.13-slim", seed=7)

    # Then it is served as pushed, a name nobody pushed is storage's 404, and neither asks upstream
    assert digest_at(cache.host, "mirror/docker.io/library/python", "3.13-slim") == copied
    assert digest_at(cache.host, REPO, "3.13-slim") is None
    assert cache.upstream_requests == []

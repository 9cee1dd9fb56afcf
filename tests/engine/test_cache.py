"""Warming a pull-through cache: the CNCF registry in proxy mode stands in for ECR's."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from lambdas.mirror.copy import copy_image, warm_through_cache
from lambdas.mirror.registry import RegistryClient
from tests.engine.checks import skopeo_inspect, skopeo_raw_digest
from tests.support.images import push_image
from tests.support.registry import RegistryServer


def _stored(cache: RegistryServer, digest: str) -> bool:
    hex_ = digest.split(":", 1)[1]
    return (cache.root / f"{cache.name}-data" / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data").exists()


def _wait_stored(cache: RegistryServer, digests: set[str], timeout: float = 10) -> None:
    # The proxy commits a pulled blob in the background, just after serving it.
    deadline = time.monotonic() + timeout
    while not all(_stored(cache, d) for d in digests):
        assert time.monotonic() < deadline, "the cache did not store the blobs"
        time.sleep(0.05)


def _blobs(client: RegistryClient, repository: str, digest: str) -> set[str]:
    doc = json.loads(client.get_manifest(repository, digest)[0])
    if "manifests" in doc:
        return set().union(*(_blobs(client, repository, m["digest"]) for m in doc["manifests"]))
    return {doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])}


def test_a_warmed_cache_serves_the_image_after_the_upstream_is_gone(
        registry_factory: Callable[..., RegistryServer], destination: RegistryServer) -> None:
    # Given an upstream image and a cache in front of it
    upstream = registry_factory("upstream")
    digest = push_image(upstream.host, "team/app", "v1", attestations=True, seed=50)
    cache = registry_factory("cache", proxy={"remoteurl": upstream.url})
    client = RegistryClient(cache.host)
    # When the cache is warmed, and the upstream goes away
    result = warm_through_cache(client, "team/app", "v1", skip_cached=False)
    assert result.source_digest == digest and result.blobs_copied == 12
    _wait_stored(cache, _blobs(RegistryClient(upstream.host), "team/app", digest))
    upstream.stop()
    # Then the cache still serves the whole image, digest-exact
    assert skopeo_raw_digest(cache.host, "team/app", "v1") == digest
    assert skopeo_inspect(cache.host, "team/app", "v1").returncode == 0
    copied = copy_image(RegistryClient(cache.host), "team/app", RegistryClient(destination.host), "mirror/app", "v1")
    assert copied.destination_digest == digest


def test_warming_with_a_platform_filter_pulls_only_the_kept_platforms(
        registry_factory: Callable[..., RegistryServer]) -> None:
    upstream = registry_factory("upstream")
    push_image(upstream.host, "team/app", "v1", platforms=("linux/amd64", "linux/arm64", "linux/arm/v7"),
               attestations=True, seed=51)
    cache = registry_factory("cache", proxy={"remoteurl": upstream.url})
    client = RegistryClient(cache.host)
    result = warm_through_cache(client, "team/app", "v1", platforms=["linux/arm/v7"], skip_cached=False)
    # The index, the arm/v7 manifest and its attestation; their 3 + 3 blobs
    assert client.counters[("GET", "manifest")] == 3
    assert result.blobs_copied == 6 and result.manifests_put == 0
    gets = [r.path for r in upstream.requests() if r.method == "GET" and "/manifests/" in r.path]
    assert len(gets) == 3


def test_warming_skips_blobs_the_cache_reports_holding(registry_factory: Callable[..., RegistryServer]) -> None:
    # The CNCF proxy answers blob HEADs from upstream, so every blob looks held: none is read
    upstream = registry_factory("upstream")
    push_image(upstream.host, "team/app", "v1", kind="docker-v2", seed=52)
    cache = registry_factory("cache", proxy={"remoteurl": upstream.url})
    result = warm_through_cache(RegistryClient(cache.host), "team/app", "v1")
    assert (result.blobs_skipped, result.blobs_copied, result.bytes_copied) == (3, 0, 0)

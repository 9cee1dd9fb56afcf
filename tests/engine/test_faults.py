"""Faults between the engine and the registries; after each, no destination tag points at
incomplete or wrong content, and a re-run converges."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable

import pytest

from lambdas.mirror.oci.copy import copy_image
from lambdas.mirror.oci.errors import DigestMismatch, ManifestError, RegistryError, TooManyRequests
from lambdas.mirror.oci.ratelimit import RateLimit
from lambdas.mirror.oci.registry import RegistryClient
from tests.engine.checks import missing_content, skopeo_raw_digest, tag_exists
from tests.support.faults import FaultProxy
from tests.support.images import push_image
from tests.support.registry import RegistryServer

BLOB = r"/blobs/sha256:"
Proxy = Callable[[str], FaultProxy]


def _converges(proxy: FaultProxy, source: RegistryClient, destination: RegistryServer, digest: str) -> None:
    proxy.clear()
    result = copy_image(source, "team/app", RegistryClient(destination.host), "mirror/app", "v1")
    assert result.destination_digest == digest == skopeo_raw_digest(destination.host, "mirror/app", "v1")
    assert missing_content(destination.host, "mirror/app", "v1") == []


def test_a_connection_dropped_mid_blob_is_resumed_from_the_start(
        source: RegistryServer, destination: RegistryServer, fault_proxy: Proxy) -> None:
    digest = push_image(source.host, "team/app", "v1", layer_size=256 << 10, seed=30)
    proxy = fault_proxy(source.host)
    proxy.add("drop", BLOB, times=1)
    result = copy_image(RegistryClient(proxy.host), "team/app", RegistryClient(destination.host), "mirror/app", "v1")
    assert [s.fault for s in proxy.seen].count("drop") == 1
    assert result.destination_digest == digest
    assert missing_content(destination.host, "mirror/app", "v1") == []


# Below and above the size from which blobs are read ahead on a helper thread.
SIZES = pytest.mark.parametrize("layer_size", [256 << 10, 6 << 20], ids=["small", "read-ahead"])


@SIZES
def test_a_source_that_keeps_dropping_fails_and_leaves_no_tag(
        source: RegistryServer, destination: RegistryServer, fault_proxy: Proxy, layer_size: int) -> None:
    digest = push_image(source.host, "team/app", "v1", layer_size=layer_size, seed=31)
    proxy = fault_proxy(source.host)
    proxy.add("drop", BLOB, times=-1)
    client = RegistryClient(proxy.host)
    with pytest.raises(RegistryError, match="connection lost"):
        copy_image(client, "team/app", RegistryClient(destination.host), "mirror/app", "v1")
    assert not tag_exists(destination.host, "mirror/app", "v1")
    _converges(proxy, client, destination, digest)


@SIZES
def test_a_corrupted_blob_is_never_committed(source: RegistryServer, destination: RegistryServer,
                                             fault_proxy: Proxy, layer_size: int) -> None:
    digest = push_image(source.host, "team/app", "v1", kind="docker-v2", layers=1, layer_size=layer_size, seed=32)
    proxy = fault_proxy(source.host)
    proxy.add("corrupt", BLOB, times=-1)
    client = RegistryClient(proxy.host)
    with pytest.raises(DigestMismatch):
        copy_image(client, "team/app", RegistryClient(destination.host), "mirror/app", "v1", workers=1)
    commits = [r for r in destination.requests() if r.method == "PUT" and "digest=" in r.path and r.status == 201]
    assert commits == []
    assert not tag_exists(destination.host, "mirror/app", "v1")
    _converges(proxy, client, destination, digest)


def test_a_destination_failing_with_5xx_keeps_the_old_tag(source: RegistryServer, destination: RegistryServer,
                                                          fault_proxy: Proxy) -> None:
    # Given the destination already holds v1 at an older image
    old = push_image(source.host, "team/app", "v1", seed=33)
    client = RegistryClient(source.host)
    copy_image(client, "team/app", RegistryClient(destination.host), "mirror/app", "v1")
    new = push_image(source.host, "team/app", "v1", seed=34)
    # When every manifest PUT fails
    proxy = fault_proxy(destination.host)
    proxy.add("status", "/manifests/", method="PUT", status=500, times=-1)
    with pytest.raises(RegistryError) as failed:
        copy_image(client, "team/app", RegistryClient(proxy.host), "mirror/app", "v1")
    # Then the tag still names the complete old image, and a later run moves it to the new one
    assert failed.value.status == 500
    assert skopeo_raw_digest(destination.host, "mirror/app", "v1") == old
    assert missing_content(destination.host, "mirror/app", "v1") == []
    _converges(proxy, client, destination, new)


def test_transient_503s_on_idempotent_requests_are_retried(source: RegistryServer, destination: RegistryServer,
                                                           fault_proxy: Proxy) -> None:
    digest = push_image(source.host, "team/app", "v1", seed=35)
    proxy = fault_proxy(destination.host)
    proxy.add("status", "/manifests/", method="PUT", status=503, times=2)
    result = copy_image(RegistryClient(source.host), "team/app", RegistryClient(proxy.host), "mirror/app", "v1")
    assert result.destination_digest == digest


def test_a_429_storm_is_waited_out_by_retry_after(source: RegistryServer, destination: RegistryServer,
                                                  fault_proxy: Proxy) -> None:
    digest = push_image(source.host, "team/app", "v1", kind="oci-manifest", seed=36)
    proxy = fault_proxy(source.host)
    proxy.add("status", "/manifests/", status=429, headers={"Retry-After": "1"}, times=2)
    client = RegistryClient(proxy.host, max_retry_wait=5)
    started = time.monotonic()
    result = copy_image(client, "team/app", RegistryClient(destination.host), "mirror/app", "v1")
    assert result.destination_digest == digest
    assert time.monotonic() - started >= 2
    assert client.counters[("GET", "manifest")] == 3  # two refusals, then the one that counted


def test_a_429_beyond_the_wait_budget_raises_at_once_without_writing(
        source: RegistryServer, destination: RegistryServer, fault_proxy: Proxy) -> None:
    digest = push_image(source.host, "team/app", "v1", seed=37)
    proxy = fault_proxy(source.host)
    proxy.add("status", "/manifests/", status=429, headers={"Retry-After": "3600"}, times=-1)
    client = RegistryClient(proxy.host, max_retry_wait=5)
    started = time.monotonic()
    with pytest.raises(TooManyRequests) as limited:
        copy_image(client, "team/app", RegistryClient(destination.host), "mirror/app", "v1")
    assert limited.value.retry_after == 3600 and time.monotonic() - started < 2
    assert len([s for s in proxy.seen if "/manifests/" in s.path]) == 1  # no blind retries
    assert not tag_exists(destination.host, "mirror/app", "v1")
    _converges(proxy, client, destination, digest)


def test_a_429_without_retry_after_is_not_retried(source: RegistryServer, fault_proxy: Proxy) -> None:
    push_image(source.host, "team/app", "v1", seed=38)
    proxy = fault_proxy(source.host)
    proxy.add("status", "/manifests/", method="HEAD", status=429, times=-1)
    client = RegistryClient(proxy.host)
    with pytest.raises(TooManyRequests) as limited:
        client.head_manifest("team/app", "v1")
    assert limited.value.retry_after is None and len(proxy.seen) == 1


@pytest.mark.parametrize(("budget", "asked"), [(0, 1), (2, 3)], ids=["lambda-budget", "two-seconds"])
def test_a_429_storm_with_retry_after_zero_is_not_a_busy_loop(source: RegistryServer, fault_proxy: Proxy,
                                                               budget: float, asked: int) -> None:
    # Given an upstream that keeps answering 429 with `Retry-After: 0`
    push_image(source.host, "team/app", "v1", seed=46)
    proxy = fault_proxy(source.host)
    proxy.add("status", "/manifests/", method="HEAD", status=429, headers={"Retry-After": "0"}, times=50)
    client = RegistryClient(proxy.host, max_retry_wait=budget)
    # When the engine asks, Then each retry still spends the wait budget, so the storm ends in a raise
    with pytest.raises(TooManyRequests) as limited:
        client.head_manifest("team/app", "v1")
    assert limited.value.retry_after == 0 and len(proxy.seen) == asked


def test_a_failed_blob_redirect_does_not_put_the_presigned_query_in_the_error(
        source: RegistryServer, fault_proxy: Proxy) -> None:
    # Given a registry that redirects a blob to a presigned URL (as ECR and Docker Hub do) that cannot be reached
    push_image(source.host, "team/app", "v1", kind="oci-manifest", seed=47)
    manifest, _ = RegistryClient(source.host).get_manifest("team/app", "v1")
    layer = json.loads(manifest)["layers"][0]["digest"]
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    presigned = f"http://127.0.0.1:{port}/layer?X-Amz-Security-Token=s3cr3t&X-Amz-Signature=s1gn4ture"
    proxy = fault_proxy(source.host)
    proxy.add("status", BLOB, status=307, headers={"Location": presigned}, times=-1)
    # When the engine fails to fetch it, Then the error names the host and path, not the credentials
    with pytest.raises(RegistryError) as failed:
        RegistryClient(proxy.host, connection_retries=0).open_blob("team/app", layer)
    assert f"127.0.0.1:{port}/layer" in str(failed.value)
    assert "s3cr3t" not in str(failed.value) and "s1gn4ture" not in str(failed.value)


def test_a_malformed_manifest_fails_before_anything_is_written(
        source: RegistryServer, destination: RegistryServer, fault_proxy: Proxy) -> None:
    digest = push_image(source.host, "team/app", "v1", seed=39)
    proxy = fault_proxy(source.host)
    proxy.add("malformed", "/manifests/v1", times=-1)
    client = RegistryClient(proxy.host)
    with pytest.raises(ManifestError):
        copy_image(client, "team/app", RegistryClient(destination.host), "mirror/app", "v1")
    assert not [r for r in destination.requests() if r.method in ("POST", "PUT", "PATCH")]
    _converges(proxy, client, destination, digest)


def test_a_manifest_that_does_not_match_its_digest_is_refused(source: RegistryServer, fault_proxy: Proxy) -> None:
    digest = push_image(source.host, "team/app", "v1", seed=40)
    proxy = fault_proxy(source.host)
    proxy.add("malformed", "/manifests/sha256:", times=-1)
    with pytest.raises(DigestMismatch):
        RegistryClient(proxy.host).get_manifest("team/app", digest)


def test_rate_limit_headers_are_read_from_a_head(source: RegistryServer, fault_proxy: Proxy) -> None:
    digest = push_image(source.host, "team/app", "v1", seed=41)
    proxy = fault_proxy(source.host)
    proxy.add("headers", "/manifests/", method="HEAD", headers={
        "ratelimit-limit": "100;w=21600", "ratelimit-remaining": "76;w=21600", "docker-ratelimit-source": "192.0.2.1"})
    info = RegistryClient(proxy.host).head_manifest("team/app", "v1")
    assert info is not None and info.digest == digest
    assert info.rate_limit == RateLimit(limit=100, remaining=76, source="192.0.2.1")
    assert len(source.manifest_gets()) == 0


def test_a_destination_resetting_mid_upload_restarts_the_blob_without_leaking_threads(
        source: RegistryServer, destination: RegistryServer, fault_proxy: Proxy) -> None:
    digest = push_image(source.host, "team/app", "v1", kind="oci-manifest", layers=1, layer_size=6 << 20, seed=42)
    proxy = fault_proxy(destination.host)
    proxy.add("reset", "/blobs/uploads/", method="PUT", times=1)
    result = copy_image(RegistryClient(source.host), "team/app", RegistryClient(proxy.host), "mirror/app", "v1")
    assert result.destination_digest == digest and [s.fault for s in proxy.seen].count("reset") == 1
    assert missing_content(destination.host, "mirror/app", "v1") == []
    assert not [t for t in threading.enumerate() if t.name == "blob-read" or t.name.startswith("copy")]

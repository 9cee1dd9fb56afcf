"""The limiter counts like Docker Hub: against a real docker-registry behind it, through HTTP."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from dataclasses import replace

import pytest
import urllib3

from tests.support.images import Pusher, push_image
from tests.support.limiter import HOURLY, POLICIES, SIX_HOURS, TOO_MANY_REQUESTS_BODY, Limiter, ManualClock, Policy
from tests.support.registry import RegistryServer

ACCEPT = {"Accept": "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"}


def get_manifest(client: Pusher, repository: str = "library/python", tag: str = "3.13", method: str = "GET",
                 **headers: str) -> urllib3.BaseHTTPResponse:
    return client.request(method, f"/v2/{repository}/manifests/{tag}", repository, headers={**ACCEPT, **headers})


def test_a_manifest_get_counts_one_pull_and_reports_it_in_docker_hubs_headers(
        registry: RegistryServer, limiter_factory: Callable[..., Limiter]) -> None:
    # Given an image on the registry behind a limiter with Docker Hub's limits
    push_image(registry.host, "library/python", "3.13")
    limiter = limiter_factory()
    client = Pusher(limiter.host)

    # When an anonymous client GETs the manifest twice
    first = get_manifest(client)
    second = get_manifest(client)

    # Then each GET is a pull, counted against the client address, and the headers say so
    assert (first.status, second.status) == (200, 200)
    assert first.headers["ratelimit-limit"] == "100;w=21600"
    assert first.headers["ratelimit-remaining"] == "99;w=21600"
    assert second.headers["ratelimit-remaining"] == "98;w=21600"
    assert second.headers["docker-ratelimit-source"] == "127.0.0.1"
    assert limiter.usage()["127.0.0.1"].manifest_gets == 2
    assert limiter.quota("127.0.0.1").remaining == 98


def test_a_manifest_head_is_free_and_still_carries_the_rate_headers(
        registry: RegistryServer, limiter_factory: Callable[..., Limiter]) -> None:
    # Given one pull already made
    push_image(registry.host, "library/python", "3.13")
    limiter = limiter_factory()
    client = Pusher(limiter.host)
    get_manifest(client)

    # When the client HEADs the manifest three times
    heads = [get_manifest(client, method="HEAD") for _ in range(3)]

    # Then no HEAD is counted, and each reports the quota left with the digest
    assert {h.status for h in heads} == {200}
    assert {h.headers["ratelimit-remaining"] for h in heads} == {"99;w=21600"}
    assert all(h.headers["Docker-Content-Digest"].startswith("sha256:") for h in heads)
    usage = limiter.usage()["127.0.0.1"]
    assert (usage.manifest_gets, usage.manifest_heads) == (1, 3)


def test_blob_gets_cost_no_pull_but_their_bytes_are_counted(
        registry: RegistryServer, limiter_factory: Callable[..., Limiter]) -> None:
    # Given a single-platform image and its config and layer digests
    push_image(registry.host, "bitnami/redis", "7.4", kind="oci-manifest", layer_size=3000)
    limiter = limiter_factory()
    client = Pusher(limiter.host)
    manifest = get_manifest(client, "bitnami/redis", "7.4")
    blobs = [manifest.json()["config"], *manifest.json()["layers"]]

    # When the client downloads every blob, twice
    for _ in range(2):
        for blob in blobs:
            response = client.request("GET", f"/v2/bitnami/redis/blobs/{blob['digest']}", "bitnami/redis")
            assert response.status == 200 and len(response.data) == blob["size"]

    # Then only the manifest GET is a pull, and every byte served is counted
    usage = limiter.usage()["127.0.0.1"]
    assert usage.manifest_gets == 1
    assert usage.bytes_served == len(manifest.data) + 2 * sum(b["size"] for b in blobs)


def test_past_the_anonymous_limit_a_manifest_get_gets_docker_hubs_429(
        registry: RegistryServer, limiter_factory: Callable[..., Limiter]) -> None:
    # Given an anonymous client that has used its 100 pulls
    push_image(registry.host, "library/python", "3.13")
    limiter = limiter_factory()
    client = Pusher(limiter.host)
    assert {get_manifest(client).status for _ in range(100)} == {200}

    # When it makes the 101st GET, and a HEAD
    throttled = get_manifest(client)
    head = get_manifest(client, method="HEAD")

    # Then the GET gets Docker Hub's 429 and body, the HEAD still works, and nothing more is counted
    assert throttled.status == 429
    assert throttled.data == TOO_MANY_REQUESTS_BODY
    assert json.loads(throttled.data) == {"errors": [{
        "code": "TOOMANYREQUESTS",
        "message": "You have reached your pull rate limit. You may increase the limit by authenticating and "
                   "upgrading: https://www.docker.com/increase-rate-limits"}]}
    assert throttled.headers["ratelimit-remaining"] == "0;w=21600"
    assert head.status == 200 and head.headers["ratelimit-remaining"] == "0;w=21600"
    usage = limiter.usage()["127.0.0.1"]
    assert (usage.manifest_gets, usage.throttled) == (100, 1)


def test_the_window_slides_so_a_pull_frees_its_slot_when_it_ages_out(
        registry: RegistryServer, limiter_factory: Callable[..., Limiter], clock: ManualClock) -> None:
    # Given a limit of 3 per 600 s, with pulls at t=0, t=100 and t=200
    push_image(registry.host, "library/python", "3.13")
    limiter = limiter_factory(policy=replace(SIX_HOURS, window=600, anonymous=3))
    client = Pusher(limiter.host)
    statuses = []
    for _ in range(3):
        statuses.append(get_manifest(client).status)
        clock.advance(100)

    # When the client pulls at t=300 (full), t=599 (the t=0 pull still counts) and t=600 (it aged out)
    statuses.append(get_manifest(client).status)
    clock.advance(299)
    statuses.append(get_manifest(client).status)
    clock.advance(1)
    statuses.append(get_manifest(client).status)

    # Then the window is a rolling one, not a fixed bucket reset
    assert statuses == [200, 200, 200, 429, 429, 200]
    assert limiter.quota("127.0.0.1").remaining == 0


def test_an_authenticated_user_gets_the_higher_limit_counted_apart_from_the_address(
        registry: RegistryServer, limiter_factory: Callable[..., Limiter]) -> None:
    # Given a user account and an anonymous client on the same address, with the anonymous quota used up
    push_image(registry.host, "library/python", "3.13")
    limiter = limiter_factory(users={"ci-team": "dckr_pat_test"},
                              policy=replace(SIX_HOURS, anonymous=2, authenticated=4))
    anonymous = Pusher(limiter.host)
    user = Pusher(limiter.host, username="ci-team", password="dckr_pat_test")
    assert [get_manifest(anonymous).status for _ in range(3)] == [200, 200, 429]

    # When the user pulls five times
    responses = [get_manifest(user) for _ in range(5)]

    # Then the user has its own, larger allowance, and the headers name the user
    assert [r.status for r in responses] == [200, 200, 200, 200, 429]
    assert responses[0].headers["ratelimit-limit"] == "4;w=21600"
    assert responses[0].headers["docker-ratelimit-source"] == "ci-team"
    assert limiter.usage()["ci-team"].manifest_gets == 4
    assert limiter.usage()["127.0.0.1"].manifest_gets == 2


def test_requests_without_a_token_are_challenged_and_bad_credentials_get_none(
        registry: RegistryServer, limiter_factory: Callable[..., Limiter]) -> None:
    # Given a limiter with one user
    limiter = limiter_factory(users={"ci-team": "right"})
    http = urllib3.PoolManager(retries=False)

    # When a client asks without credentials, then asks for a token with a wrong password
    bare = http.request("GET", f"{limiter.url}/v2/library/python/manifests/3.13")
    wrong = Pusher(limiter.host, username="ci-team", password="wrong")

    # Then it gets Docker Hub's Bearer challenge, and no token for wrong credentials
    assert bare.status == 401
    assert bare.headers["WWW-Authenticate"] == (
        f'Bearer realm="{limiter.url}/token",service="registry.docker.io",scope="repository:library/python:pull"')
    try:
        get_manifest(wrong)
    except RuntimeError as err:
        assert "401" in str(err)
    else:
        raise AssertionError("a wrong password got a token")
    assert limiter.usage() == {}


def test_clients_behind_different_forwarded_addresses_are_counted_apart(
        registry: RegistryServer, limiter_factory: Callable[..., Limiter]) -> None:
    # Given an anonymous limit of one pull
    push_image(registry.host, "library/python", "3.13")
    limiter = limiter_factory(policy=replace(SIX_HOURS, anonymous=1))
    client = Pusher(limiter.host)

    # When two simulated NAT addresses pull, one of them twice
    first = get_manifest(client, **{"X-Forwarded-For": "203.0.113.7"})
    again = get_manifest(client, **{"X-Forwarded-For": "203.0.113.7, 10.0.0.1"})
    other = get_manifest(client, **{"X-Forwarded-For": "198.51.100.9"})

    # Then each address has its own count
    assert (first.status, again.status, other.status) == (200, 429, 200)
    assert other.headers["docker-ratelimit-source"] == "198.51.100.9"


def test_a_get_of_a_missing_manifest_costs_no_pull(
        registry: RegistryServer, limiter_factory: Callable[..., Limiter]) -> None:
    # Given an empty registry
    limiter = limiter_factory()
    client = Pusher(limiter.host)

    # When a client GETs a tag that does not exist
    missing = get_manifest(client, "library/nope", "1")

    # Then it gets the registry's 404 and keeps its whole quota
    assert missing.status == 404
    assert missing.headers["ratelimit-remaining"] == "100;w=21600"
    assert limiter.quota("127.0.0.1").remaining == 100
    assert [p.status for p in limiter.pulls()] == [404]


def test_repeated_accept_headers_reach_the_registry_so_go_clients_get_oci_indexes(
        registry: RegistryServer, limiter_factory: Callable[..., Limiter]) -> None:
    # Given an OCI index, and a token for it
    push_image(registry.host, "library/python", "3.13", kind="oci-index")
    limiter = limiter_factory()
    token = urllib3.PoolManager().request("GET", f"{limiter.url}/token").json()["token"]

    # When a client sends one Accept header per media type, as distribution's Go client does
    connection = http.client.HTTPConnection(limiter.host, timeout=10)
    connection.putrequest("GET", "/v2/library/python/manifests/3.13")
    connection.putheader("Authorization", f"Bearer {token}")
    connection.putheader("Accept", "application/vnd.docker.distribution.manifest.v2+json")
    connection.putheader("Accept", "application/vnd.oci.image.index.v1+json")
    connection.endheaders()
    response = connection.getresponse()

    # Then the registry sees both and serves the index
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/vnd.oci.image.index.v1+json"
    connection.close()


def test_pushes_stream_through_uncounted_including_chunked_uploads(
        registry: RegistryServer, limiter_factory: Callable[..., Limiter]) -> None:
    # Given a user pushing through the limiter
    limiter = limiter_factory(users={"ci-team": "token"})
    pusher = Pusher(limiter.host, username="ci-team", password="token")

    # When it pushes an image, and a blob as a chunked upload
    push_image(limiter.host, "acme/app", "1", username="ci-team", password="token")
    digest, size = pusher.blob_stream("acme/app", iter([b"a" * 100_000, b"b" * 5]))

    # Then the registry behind holds them, and no pull was counted
    assert size == 100_005
    assert Pusher(registry.host).has_blob("acme/app", digest)
    assert Pusher(registry.host).get_manifest("acme/app", "1")
    assert sum(u.manifest_gets for u in limiter.usage().values()) == 0


@pytest.mark.parametrize("policy", POLICIES, ids=[p.name for p in POLICIES])
def test_each_policy_reports_its_limit_and_window_in_docker_hubs_header_shape(
        registry: RegistryServer, limiter_factory: Callable[..., Limiter], policy: Policy) -> None:
    # Given a limiter under one of Docker Hub's published policies, and a user account
    push_image(registry.host, "library/python", "3.13")
    limiter = limiter_factory(policy=policy, users={"ci-team": "token"})

    # When an anonymous client and the user each GET the manifest once
    anonymous = get_manifest(Pusher(limiter.host))
    user = get_manifest(Pusher(limiter.host, username="ci-team", password="token"))

    # Then the headers read `<limit>;w=<window seconds>`: 100;w=21600 / 200;w=21600, or 10;w=3600 / 100;w=3600
    window = int(policy.window)
    assert anonymous.headers["ratelimit-limit"] == f"{policy.anonymous};w={window}"
    assert anonymous.headers["ratelimit-remaining"] == f"{policy.anonymous - 1};w={window}"
    assert user.headers["ratelimit-limit"] == f"{policy.authenticated};w={window}"
    assert user.headers["ratelimit-remaining"] == f"{policy.authenticated - 1};w={window}"


def test_the_hourly_policy_allows_ten_anonymous_pulls_an_hour_in_a_sliding_window(
        registry: RegistryServer, limiter_factory: Callable[..., Limiter], clock: ManualClock) -> None:
    # Given the hourly policy and an anonymous client that pulls ten times, one a minute
    push_image(registry.host, "library/python", "3.13")
    limiter = limiter_factory(policy=HOURLY)
    client = Pusher(limiter.host)
    first = []
    for _ in range(10):
        first.append(get_manifest(client).status)
        clock.advance(60)

    # When it pulls again at 10 min, 59:59 after the first pull, and at 60:00 (the first pull aged out)
    at_ten = get_manifest(client)
    clock.advance(3599 - 600)
    before_hour = get_manifest(client).status
    clock.advance(1)
    at_hour = get_manifest(client).status

    # Then the 11th pull within the hour is refused with Docker Hub's 429, and the window slides
    assert first == [200] * 10
    assert (at_ten.status, at_ten.headers["ratelimit-remaining"]) == (429, "0;w=3600")
    assert (before_hour, at_hour) == (429, 200)


@pytest.mark.parametrize("policy", POLICIES, ids=[p.name for p in POLICIES])
def test_anonymous_ipv6_clients_are_counted_per_64_network(
        registry: RegistryServer, limiter_factory: Callable[..., Limiter], policy: Policy) -> None:
    # Given a policy ("per IPv4 address or IPv6 /64 subnet", both), and anonymous clients on two addresses of one
    # IPv6 /64 and one of another
    push_image(registry.host, "library/python", "3.13")
    limiter = limiter_factory(policy=replace(policy, anonymous=2))
    client = Pusher(limiter.host)

    # When the two same-network addresses pull once each, then once more, and the other network pulls
    first = get_manifest(client, **{"X-Forwarded-For": "2001:db8:0:1::a"})
    second = get_manifest(client, **{"X-Forwarded-For": "2001:db8:0:1:ffff::b"})
    third = get_manifest(client, **{"X-Forwarded-For": "2001:db8:0:1::a"})
    other = get_manifest(client, **{"X-Forwarded-For": "2001:db8:0:2::a"})

    # Then the /64 shares one allowance, named by its network address, and the other /64 has its own
    assert (first.status, second.status, third.status, other.status) == (200, 200, 429, 200)
    assert first.headers["docker-ratelimit-source"] == "2001:db8:0:1::"
    assert limiter.usage()["2001:db8:0:1::"].manifest_gets == 2


@pytest.mark.parametrize("policy", POLICIES, ids=[p.name for p in POLICIES])
def test_an_account_is_counted_across_addresses_and_apart_from_them(
        registry: RegistryServer, limiter_factory: Callable[..., Limiter], policy: Policy) -> None:
    # Given a policy with a three-pull account allowance, and one account used from two NAT addresses
    push_image(registry.host, "library/python", "3.13")
    limiter = limiter_factory(policy=replace(policy, authenticated=3), users={"ci-team": "token"})
    user = Pusher(limiter.host, username="ci-team", password="token")
    anonymous = Pusher(limiter.host)

    # When the account pulls twice from each address, and an anonymous client pulls from the first
    statuses = [get_manifest(user, **{"X-Forwarded-For": ip}).status
                for ip in ("203.0.113.7", "198.51.100.9", "203.0.113.7", "198.51.100.9")]
    address = get_manifest(anonymous, **{"X-Forwarded-For": "203.0.113.7"})

    # Then the account's allowance is one, whatever the address, and the address keeps its own
    assert statuses == [200, 200, 200, 429]
    assert address.status == 200
    assert address.headers["ratelimit-remaining"] == f"{policy.anonymous - 1};w={int(policy.window)}"
    assert limiter.usage()["ci-team"].manifest_gets == 3

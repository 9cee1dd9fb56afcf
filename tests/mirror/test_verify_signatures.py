"""A tag held to a signature (`verify`), against loopback registries: the planner moves a mirrored tag only to
a digest its key signed, in cosign's classic layout or as a sigstore bundle referrer; anything else leaves the
tag where it was. Signatures are made by tests/support/cosign_layout.py with keys generated here."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from lambdas.mirror.aws.connect import connect
from lambdas.mirror.oci.registry import RegistryClient
from lambdas.mirror.planning.plan import plan
from lambdas.mirror.planning.signatures import Checker, Keys
from lambdas.mirror.planning.sync import run_tasks
from lambdas.mirror.planning.task import Action, Plan
from tests.support.cosign_layout import (
    dsse_bundle,
    message_bundle,
    new_key,
    public_pem,
    push_bundle,
    push_classic,
    sign,
    sign_classic,
    simple_signing_payload,
)
from tests.support.images import push_image
from tests.support.limiter import SIX_HOURS, Limiter
from tests.support.registry import RegistryServer

from .support import config

REPOSITORY = "mirror/app"


@pytest.fixture
def registries(registry_factory: Callable[..., RegistryServer]) -> tuple[RegistryServer, RegistryServer]:
    return registry_factory("source"), registry_factory("destination")


def held_config(source: RegistryServer, key: Any, **image: Any) -> Any:
    # Referrers off: these tests count the signature check's own requests (test_referrers.py has the copy's)
    return config({"source": f"{source.host}/team/app", "tags": ["v1"], "target": REPOSITORY,
                   "verify": {"cosign_public_key": public_pem(key)}, **image}, referrers=False)


def sync(cfg: Any, destination: RegistryServer) -> Plan:
    endpoints = connect(destination.host)
    result = plan(cfg, endpoints)
    run_tasks(result.tasks(), endpoints)
    return result


def mirrored(destination: RegistryServer) -> str | None:
    head = RegistryClient(destination.host).head_manifest(REPOSITORY, "v1")
    return head.digest if head else None


def test_a_retag_to_an_unsigned_digest_leaves_the_tag_and_a_signed_retag_moves_it(
        registries: tuple[RegistryServer, RegistryServer]) -> None:
    source, destination = registries
    key = new_key()
    signed = push_image(source.host, "team/app", "v1", seed=1)
    sign_classic(source.host, "team/app", signed, key)
    cfg = held_config(source, key)
    first = sync(cfg, destination)
    assert [(i.action, i.task.verified) for i in first.items] == [(Action.COPY, True)]
    assert mirrored(destination) == signed

    # When upstream re-tags v1 to a digest nobody signed
    unsigned = push_image(source.host, "team/app", "v1", seed=2)
    held = sync(cfg, destination)

    # Then the mirror's tag stays on the signed digest, and the plan says why
    (item,) = held.items
    assert item.action is Action.UNVERIFIED and item.task.source_digest == unsigned
    assert f"tag stays at {signed}" in item.reason and "no signature" in item.reason
    assert mirrored(destination) == signed
    assert RegistryClient(destination.host).head_manifest(REPOSITORY, unsigned) is None  # nothing of it copied

    # When the new digest gets signed by the key, the next run moves the tag
    sign_classic(source.host, "team/app", unsigned, key)
    moved = sync(cfg, destination)
    assert [i.action for i in moved.items] == [Action.COPY]
    assert mirrored(destination) == unsigned


def test_a_signature_by_another_key_or_over_another_digest_does_not_move_the_tag(
        registries: tuple[RegistryServer, RegistryServer]) -> None:
    source, destination = registries
    key, other = new_key(), new_key()
    first = push_image(source.host, "team/app", "v1", seed=1)
    sign_classic(source.host, "team/app", first, key)
    cfg = held_config(source, key)
    sync(cfg, destination)

    # A digest signed by another key, and one whose .sig tag replays the key's signature of the first digest
    second = push_image(source.host, "team/app", "v1", seed=2)
    sign_classic(source.host, "team/app", second, other)
    assert "does not verify with the configured key" in sync(cfg, destination).items[0].reason
    replayed = simple_signing_payload(f"{source.host}/team/app", first)
    third = push_image(source.host, "team/app", "v1", seed=3)
    push_classic(source.host, "team/app", third, [(replayed, sign(key, replayed))])
    assert f"the payload signs '{first}', not {third}" in sync(cfg, destination).items[0].reason

    assert mirrored(destination) == first


@pytest.mark.parametrize("bundle", ["dsse", "message"])
def test_a_sigstore_bundle_referrer_from_the_key_moves_the_tag(
        registries: tuple[RegistryServer, RegistryServer], bundle: str) -> None:
    # Given an image signed the way cosign 3 stores it: a bundle as an OCI 1.1 referrer; distribution 2.8 has no
    # referrers API (404), so the index is under the fallback tag, as cosign writes it there
    source, destination = registries
    key = new_key("rsa")
    digest = push_image(source.host, "team/app", "v1", seed=1)
    made = dsse_bundle(key, digest) if bundle == "dsse" else message_bundle(key, digest)
    push_bundle(source.host, "team/app", digest, made)

    result = sync(held_config(source, key), destination)

    assert [i.action for i in result.items] == [Action.COPY], result.items[0].reason
    assert "sigstore bundle" in result.items[0].reason
    assert mirrored(destination) == digest
    referrers = [r for r in source.requests() if "/referrers/" in r.path]
    assert [(r.method, r.status) for r in referrers] == [("GET", 404)]


def test_a_keyless_bundle_is_not_accepted(registries: tuple[RegistryServer, RegistryServer]) -> None:
    source, destination = registries
    key = new_key()
    digest = push_image(source.host, "team/app", "v1", seed=1)
    push_bundle(source.host, "team/app", digest, dsse_bundle(key, digest, certificate=True))

    (item,) = sync(held_config(source, key), destination).items

    assert item.action is Action.UNVERIFIED and "keyless" in item.reason and "tag not created" in item.reason
    assert mirrored(destination) is None


def test_the_copy_moves_the_tag_to_the_digest_that_was_signed_not_to_a_later_retag(
        registries: tuple[RegistryServer, RegistryServer]) -> None:
    source, destination = registries
    key = new_key()
    signed = push_image(source.host, "team/app", "v1", seed=1)
    sign_classic(source.host, "team/app", signed, key)
    endpoints = connect(destination.host)
    planned = plan(held_config(source, key), endpoints)

    push_image(source.host, "team/app", "v1", seed=2)  # re-tagged between the plan and the copy
    (outcome,) = run_tasks(planned.tasks(), endpoints)

    assert (outcome.status, outcome.source_digest) == ("copied", signed)
    assert mirrored(destination) == signed


def test_an_unsigned_digest_seen_before_costs_no_get_until_a_signature_tag_appears(
        registries: tuple[RegistryServer, RegistryServer]) -> None:
    source, destination = registries
    key = new_key()
    push_image(source.host, "team/app", "v1", seed=1)
    cfg = held_config(source, key)
    endpoints = connect(destination.host)
    first = plan(cfg, endpoints, checker=Checker(Keys(), floor=0, remembered={}, now=1000.0))
    assert first.items[0].action is Action.UNVERIFIED and len(first.unsigned) == 1
    before = len(source.requests())

    again = plan(cfg, endpoints, checker=Checker(Keys(), floor=0, remembered=first.unsigned, now=2000.0))

    assert again.items[0].action is Action.UNVERIFIED and again.unsigned == first.unsigned
    assert [r.method for r in source.requests()[before:] if r.method != "HEAD"] == []
    sign_classic(source.host, "team/app", first.items[0].task.source_digest or "", key)
    signed = plan(cfg, endpoints, checker=Checker(Keys(), floor=0, remembered=first.unsigned, now=3000.0))
    assert signed.items[0].action is Action.COPY and signed.unsigned == {}


def test_images_without_verify_and_the_cli_plan_send_no_signature_request(
        registries: tuple[RegistryServer, RegistryServer]) -> None:
    source, destination = registries
    key = new_key()
    push_image(source.host, "team/app", "v1", seed=1)
    cfg = config({"source": f"{source.host}/team/app", "tags": ["v1"], "target": REPOSITORY},
                 {"source": f"{source.host}/team/app", "tags": ["v1"], "target": "mirror/held",
                  "verify": {"cosign_public_key": public_pem(key)}}, referrers=False)

    before = len(source.requests())

    planned = plan(cfg, connect(destination.host), check_signatures=False)

    assert [i.action for i in planned.items] == [Action.COPY, Action.COPY]
    assert [i.task.cost for i in planned.items] == [17, 19]  # a new index (1 + 16 assumed); plus the check
    sent = source.requests()[before:]
    assert sent and {r.method for r in sent if r.path != "/v2/"} == {"HEAD"}
    assert not any(".sig" in r.path or "sha256-" in r.path for r in sent)


def test_the_signature_check_costs_one_pull_at_docker_hub_and_keeps_the_reserve(
        registry_factory: Callable[..., RegistryServer]) -> None:
    hub, destination = registry_factory("hub"), registry_factory("destination")
    key = new_key()
    digest = push_image(hub.host, "library/python", "3.13", kind="docker-v2")
    sign_classic(hub.host, "library/python", digest, key)
    cfg = config({"source": "python", "tags": ["3.13"], "target": REPOSITORY,
                  "verify": {"cosign_public_key": public_pem(key)}}, pull_through_cache=[], sync={"quota_reserve": 2},
                 referrers=False)
    with Limiter(hub.host, policy=replace(SIX_HOURS, anonymous=6)) as limiter:
        endpoints = connect(destination.host, upstreams={"docker.io": limiter.host})
        planned = plan(cfg, endpoints)
        check_pulls = limiter.usage()["127.0.0.1"].manifest_gets
        run_tasks(planned.tasks(), endpoints)
        copy_pulls = limiter.usage()["127.0.0.1"].manifest_gets - check_pulls

        # When the tag moves again with 4 pulls left, 2 of them the reserve: the copy and its check (3) wait
        push_image(hub.host, "library/python", "3.13", kind="docker-v2", seed=5)
        deferred = plan(cfg, endpoints)
        gets_deferred = limiter.usage()["127.0.0.1"].manifest_gets - check_pulls - copy_pulls

    # Then the check of the first cost one pull (the .sig manifest; its payload blob is free) and the copy one
    assert (planned.items[0].action, planned.items[0].task.cost, check_pulls, copy_pulls) == (Action.COPY, 3, 1, 1)
    assert (deferred.items[0].action, gets_deferred) == (Action.DEFERRED, 0) and "quota" in deferred.items[0].reason
    assert mirrored_tag(destination, "3.13") == digest


def mirrored_tag(destination: RegistryServer, tag: str) -> str | None:
    head = RegistryClient(destination.host).head_manifest(REPOSITORY, tag)
    return head.digest if head else None


@pytest.fixture
def lambdas(aws: str, monkeypatch: pytest.MonkeyPatch, registries: tuple[RegistryServer, RegistryServer]) -> Any:
    """The planner and copier as deployed: the spec, the planner state and the public key in SSM (moto)."""
    import boto3

    from lambdas.mirror.settings import ENV_QUEUE_URL, ENV_REGISTRY, ENV_SPEC_PARAMETER, ENV_STATE_PARAMETER

    source, destination = registries
    key = new_key()
    ssm = boto3.client("ssm")
    ssm.put_parameter(Name="/ecr-mirror/test/cosign.pub", Value=public_pem(key), Type="String")
    cfg = config({"source": f"{source.host}/team/app", "tags": ["v1"], "target": REPOSITORY,
                  "verify": {"cosign_public_key": "ssm:/ecr-mirror/test/cosign.pub"}})
    ssm.put_parameter(Name="/ecr-mirror/test/spec", Value=cfg.to_spec(), Type="String")
    ssm.put_parameter(Name="/ecr-mirror/test/state", Value="{}", Type="String")
    queue_url = boto3.client("sqs").create_queue(QueueName="mirror-verify")["QueueUrl"]
    for name, value in ((ENV_SPEC_PARAMETER, "/ecr-mirror/test/spec"), (ENV_STATE_PARAMETER, "/ecr-mirror/test/state"),
                        (ENV_QUEUE_URL, queue_url), (ENV_REGISTRY, destination.host)):
        monkeypatch.setenv(name, value)
    return key, queue_url


def test_the_lambdas_hold_an_unsigned_retag_count_it_each_run_and_move_a_signed_one(
        lambdas: Any, registries: tuple[RegistryServer, RegistryServer], capsys: pytest.CaptureFixture[str]) -> None:
    from lambdas.mirror.handlers import copier, planner
    from tests.mirror.test_handlers import COPIER, SCHEDULED_EVENT, Context, receive_all, sqs_event

    key, queue_url = lambdas
    source, destination = registries

    def scheduled_run() -> tuple[dict[str, Any], float]:
        """One planner run and a copier run of what it queued: the summary and the ImagesUnverified it emitted."""
        summary = planner.handler(SCHEDULED_EVENT, Context())
        emf = [line for line in capsys.readouterr().out.splitlines() if '"ImagesUnverified"' in line]
        messages = receive_all(queue_url)
        if messages:
            assert copier.handler(sqs_event(messages), COPIER) == {"batchItemFailures": []}
        return summary, json.loads(emf[-1])["ImagesUnverified"]

    signed = push_image(source.host, "team/app", "v1", seed=1)
    sign_classic(source.host, "team/app", signed, key)
    assert scheduled_run()[0]["copy"] == 1 and mirrored(destination) == signed

    # When upstream re-tags v1 to an unsigned digest: held and counted, and again at the next run without a GET
    unsigned = push_image(source.host, "team/app", "v1", seed=2)
    held, count = scheduled_run()
    before = len(source.requests())
    again, count_again = scheduled_run()
    gets_again = [r for r in source.requests()[before:] if r.method == "GET" and r.path != "/v2/"]
    assert (held["unverified"], held["enqueued"], count) == (1, 0, [1.0])
    assert (again["unverified"], count_again, gets_again) == (1, [1.0], [])
    assert mirrored(destination) == signed

    # When the key signs it, the next run moves the tag and counts nothing unverified
    sign_classic(source.host, "team/app", unsigned, key)
    moved, count_moved = scheduled_run()
    assert (moved["copy"], count_moved) == (1, [0.0]) and mirrored(destination) == unsigned


def test_the_cli_sync_reports_a_held_tag_and_exits_1(registries: tuple[RegistryServer, RegistryServer],
                                                      tmp_path: Any) -> None:
    import io

    from lambdas.mirror.cli.main import main

    from .support import write_config

    source, destination = registries
    key = new_key()
    push_image(source.host, "team/app", "v1", seed=1)
    path = write_config(tmp_path / "mirror.yaml", {"source": f"{source.host}/team/app", "tags": ["v1"],
                                                   "target": REPOSITORY}, verify={"cosign_public_key": public_pem(key)})
    out = io.StringIO()

    code = main(["sync", "--config", str(path), "--registry", destination.host, "--json"], out=out, err=io.StringIO())

    report = json.loads(out.getvalue())
    assert (code, report["unverified"], report["copied"]) == (1, 1, 0)
    assert [(i["status"], i["tag"]) for i in report["items"]] == [("unverified", "v1")]
    assert "no signature" in report["items"][0]["error"] and mirrored(destination) is None

"""OCI 1.1 referrers through the mirror, between loopback registries (distribution 2.8, which has no referrers
API): an SPDX SBOM pushed with `subject` and `artifactType` arrives with its digest and is listed at the
destination; one added later arrives on the next run; a destination that refuses one fails that artifact
alone, counted in a metric, while the image and its tag move."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from lambdas.mirror.aws.connect import connect
from lambdas.mirror.handlers import copier
from lambdas.mirror.oci.referrers import fallback_tag, list_referrers
from lambdas.mirror.oci.registry import RegistryClient
from lambdas.mirror.planning.plan import plan
from lambdas.mirror.planning.sync import run_tasks
from lambdas.mirror.planning.task import Action
from lambdas.mirror.settings import ENV_REGISTRY
from tests.engine.checks import skopeo_raw_digest
from tests.support.cosign_layout import new_key, sign_classic
from tests.support.faults import FaultProxy
from tests.support.images import OCI_INDEX, push_artifact, push_image
from tests.support.limiter import SIX_HOURS, Limiter
from tests.support.registry import RegistryServer

from .support import config

# What ECR answers an OCI 1.1 manifest it will not store: 405 with "Invalid JSON syntax" (docker/compose#11239,
# containers/podman#1719 quote the message; aws/containers-roadmap#2783 reports the 405 for referrers).
ECR_REFUSAL = (b'{"errors":[{"code":"UNSUPPORTED","message":"Invalid parameter at \'ImageManifest\' failed to '
               b'satisfy constraint: \'Invalid JSON syntax\'"}]}')


def sbom(name: str) -> bytes:
    return json.dumps({"spdxVersion": "SPDX-2.3", "name": name, "SPDXID": "SPDXRef-DOCUMENT"}).encode()


def image(source: RegistryServer) -> dict[str, Any]:
    return {"source": f"{source.host}/team/app", "tags": ["v1"], "target": "mirror/app"}


def listed(host: str, digest: str) -> set[str]:
    return {d.digest for d in list_referrers(RegistryClient(host), "mirror/app", digest)}


def test_an_sbom_arrives_with_its_digest_and_is_listed_under_the_referrers_tag(
        registry_factory: Callable[..., RegistryServer]) -> None:
    # Given an image and an SPDX SBOM that refers to it at the source
    source, destination = registry_factory("source"), registry_factory("destination")
    digest = push_image(source.host, "team/app", "v1", seed=61)
    artifact = push_artifact(source.host, "team/app", digest, sbom("app"))
    endpoints = connect(destination.host)

    # When the mirror syncs
    planned = plan(config(image(source)), endpoints)
    (outcome,) = run_tasks(planned.tasks(), endpoints)

    # Then the SBOM is at the destination, digest for digest, and its referrers tag lists it with its type (the
    # plan left the listing to the copy: a new digest is listed once)
    assert planned.items[0].referrers is not None and planned.items[0].referrers.found is None
    assert outcome.status == "copied" and outcome.referrers is not None and outcome.referrers.copied == 1
    assert skopeo_raw_digest(destination.host, "mirror/app", artifact) == artifact
    index = json.loads(RegistryClient(destination.host).get_manifest("mirror/app", fallback_tag(digest))[0])
    assert [(m["digest"], m["artifactType"]) for m in index["manifests"]] == [(artifact, "application/spdx+json")]
    assert index["mediaType"] == OCI_INDEX


def test_an_sbom_added_after_the_image_was_mirrored_arrives_on_the_next_run(
        registry_factory: Callable[..., RegistryServer]) -> None:
    # Given an image mirrored with its first SBOM
    source, destination = registry_factory("source"), registry_factory("destination")
    digest = push_image(source.host, "team/app", "v1", seed=62)
    first = push_artifact(source.host, "team/app", digest, sbom("first"))
    cfg = config(image(source))
    endpoints = connect(destination.host)
    run_tasks(plan(cfg, endpoints).tasks(), endpoints)

    # When a second SBOM is pushed to the unchanged digest, and the next runs plan and sync
    second = push_artifact(source.host, "team/app", digest, sbom("second"))
    gets = len(source.manifest_gets())
    again = plan(cfg, endpoints)
    outcomes = run_tasks(again.tasks(), endpoints)
    after = plan(cfg, endpoints)

    # Then of the manifests only the new SBOM was fetched (the other GETs read the referrers tag), the tag
    # stayed, and the run after has nothing to do
    (item,) = again.items
    assert (item.action, item.reason, item.task.referrers_only) == (Action.COPY, "referrers: 1 new", True)
    assert [(o.status, o.referrers.copied if o.referrers else None) for o in outcomes] == [("referrers", 1)]
    fetched = {r.path.rsplit("/", 1)[-1] for r in source.manifest_gets()[gets:]}
    assert fetched == {second, fallback_tag(digest)}
    assert listed(destination.host, digest) == {first, second}
    assert [i.action for i in after.items] == [Action.SKIP]


def test_a_referrer_the_destination_refuses_fails_alone_and_is_counted_while_the_image_and_its_tag_move(
        aws: str, monkeypatch: pytest.MonkeyPatch, registry_factory: Callable[..., RegistryServer],
        fault_proxies: Callable[[str], FaultProxy], capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    # Given two SBOMs of an image, and a destination that answers 405 to one of them, as ECR has
    source, destination = registry_factory("source"), registry_factory("destination")
    digest = push_image(source.host, "team/app", "v1", seed=63)
    refused = push_artifact(source.host, "team/app", digest, sbom("refused"))
    accepted = push_artifact(source.host, "team/app", digest, sbom("accepted"),
                             artifact_type="application/vnd.cyclonedx+json")
    front = fault_proxies(destination.host)
    front.add("status", rf"/manifests/{refused}$", method="PUT", times=-1, status=405, body=ECR_REFUSAL)
    monkeypatch.setenv(ENV_REGISTRY, front.host)
    (task,) = plan(config(image(source)), connect(front.host)).tasks()

    # When the copier Lambda runs the task
    response = copier.handler({"Records": [record(task.to_json())]}, Context())

    # Then the message succeeded; the image and its tag moved with the accepted SBOM; the refused one is
    # absent, logged with the registry's answer, and counted
    assert response == {"batchItemFailures": []}
    client = RegistryClient(destination.host)
    assert client.head_manifest("mirror/app", "v1").digest == digest  # type: ignore[union-attr]
    assert listed(destination.host, digest) == {accepted}
    assert client.head_manifest("mirror/app", refused) is None
    (warning,) = [r for r in caplog.records if r.getMessage().startswith("referrer not copied")]
    assert warning.status == 405 and "Invalid JSON syntax" in warning.error  # type: ignore[attr-defined]
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line][-1]
    assert (emf["ImagesCopied"], emf["ReferrersCopied"], emf["ReferrersFailed"]) == ([1.0], [1.0], [1.0])


def test_a_destination_that_answers_oci_subject_keeps_its_own_list_and_no_referrers_tag_is_written(
        registry_factory: Callable[..., RegistryServer], fault_proxies: Callable[[str], FaultProxy]) -> None:
    # Given a destination that says, with OCI-Subject, that it processed each manifest's subject
    source, destination = registry_factory("source"), registry_factory("destination")
    digest = push_image(source.host, "team/app", "v1", seed=64)
    artifact = push_artifact(source.host, "team/app", digest, sbom("app"))
    front = fault_proxies(destination.host)
    front.add("headers", r"/manifests/sha256:", method="PUT", times=-1, headers={"OCI-Subject": digest})
    endpoints = connect(front.host)

    # When the mirror syncs
    (outcome,) = run_tasks(plan(config(image(source)), endpoints).tasks(), endpoints)

    # Then the SBOM is there, and the client-side referrers tag was left to the registry
    assert outcome.referrers is not None and outcome.referrers.copied == 1
    client = RegistryClient(destination.host)
    assert client.head_manifest("mirror/app", artifact) is not None
    assert client.head_manifest("mirror/app", fallback_tag(digest)) is None


def test_referrers_the_source_lists_through_the_referrers_api_are_found_there(
        registry_factory: Callable[..., RegistryServer], fault_proxies: Callable[[str], FaultProxy]) -> None:
    # Given a source with the referrers API (a proxy answers it): the SBOM is listed there, and no referrers tag
    # exists, as on a registry that answered OCI-Subject to its push
    backing, destination = registry_factory("source"), registry_factory("destination")
    front = fault_proxies(backing.host)
    front.add("headers", r"/manifests/sha256:", method="PUT", times=-1, headers={"OCI-Subject": "yes"})
    digest = push_image(front.host, "team/app", "v1", seed=65)
    artifact = push_artifact(front.host, "team/app", digest, sbom("api"))
    body = RegistryClient(backing.host).get_manifest("team/app", artifact)[0]
    listing = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": artifact, "size": len(body),
         "artifactType": "application/spdx+json"}]}
    front.add("status", rf"/referrers/{digest}$", times=-1, status=200, body=json.dumps(listing).encode(),
              headers={"Content-Type": OCI_INDEX})
    assert RegistryClient(backing.host).head_manifest("team/app", fallback_tag(digest)) is None
    cfg = config({"source": f"{front.host}/team/app", "tags": ["v1"], "target": "mirror/app"})
    endpoints = connect(destination.host)

    # When the mirror syncs
    planned = plan(cfg, endpoints)
    (outcome,) = run_tasks(planned.tasks(), endpoints)

    # Then the copy found it through the API, and it arrived
    assert outcome.referrers is not None and (outcome.referrers.found, outcome.referrers.copied) == (1, 1)
    assert listed(destination.host, digest) == {artifact}
    assert any(s.method == "GET" and "/referrers/" in s.path and s.status == 200 for s in front.seen)


def test_at_the_quota_reserve_the_referrers_wait_for_a_later_run_and_the_tag_still_moves(
        registry_factory: Callable[..., RegistryServer]) -> None:
    # Given a signed image at a rate-limited "Docker Hub" with 10 pulls left, and a copy whose reserve leaves
    # room for the image's own GET only
    hub, destination = registry_factory("hub"), registry_factory("destination")
    digest = push_image(hub.host, "team/app", "v1", kind="docker-v2", seed=66)
    sign_classic(hub.host, "team/app", digest, new_key())
    with Limiter(hub.host, policy=replace(SIX_HOURS, anonymous=10)) as limiter:
        endpoints = connect(destination.host, upstreams={"docker.io": limiter.host})
        cfg = config({"source": "team/app", "tags": ["v1"], "target": "mirror/app"}, sync={"quota_reserve": 0})
        (task,) = plan(cfg, endpoints).tasks()

        # When it runs
        (outcome,) = run_tasks([replace(task, reserve=9)], endpoints)
        gets = [p.reference for p in limiter.pulls() if p.status == 200]

    # Then the image and its tag moved; the signature did not cost a pull, and is left for a later run
    assert (outcome.status, gets) == ("copied", ["v1"])
    assert outcome.referrers is not None and "reserve 9" in outcome.referrers.deferred
    client = RegistryClient(destination.host)
    assert client.head_manifest("mirror/app", "v1").digest == digest  # type: ignore[union-attr]
    assert client.head_manifest("mirror/app", fallback_tag(digest) + ".sig") is None


class Context:
    function_name = "ecr-mirror-copier"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ecr-mirror-copier"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"

    def get_remaining_time_in_millis(self) -> int:
        return 15 * 60 * 1000


def record(body: str) -> dict[str, Any]:
    return {"messageId": "m-1", "receiptHandle": "r-1", "body": body, "md5OfBody": "",
            "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000", "SenderId": "A",
                           "ApproximateFirstReceiveTimestamp": "1700000000001"},
            "messageAttributes": {}, "eventSource": "aws:sqs", "awsRegion": "us-east-1",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:mirror"}

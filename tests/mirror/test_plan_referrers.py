"""Planning referrers with in-memory registries: the referrers tag's name, whose turn it is to be listed at a
rate-limited source, what changed, and what it costs."""

from __future__ import annotations

from typing import Any

import pytest

from ecr_mirror_cdk.config_parse import parse_config
from lambdas.mirror.oci.referrers import cosign_tags, fallback_tag
from lambdas.mirror.planning.plan import plan
from lambdas.mirror.planning.plan_referrers import REFRESH, refresh_due, schedule_period
from lambdas.mirror.planning.task import Action, Task

from .fakes import FakeRegistry, endpoints, no_record

APP = "registry.example/team/app"
APP_REPO = "mirror/registry.example/team/app"
SIG = "application/vnd.oci.image.manifest.v1+json"
NOON = 1_765_000_000.0


def config(**top: Any) -> Any:
    return parse_config({"images": [{"source": APP, "tags": ["1.0"]}], **top})


def test_the_referrers_tag_follows_the_spec_table() -> None:
    # distribution spec 1.1, "Referrers Tag Schema": algorithm cut to 32, encoded to 64, other characters as '-'
    assert fallback_tag("sha256:" + "a" * 64) == "sha256-" + "a" * 64
    assert fallback_tag("sha512:" + "a" * 128) == "sha512-" + "a" * 64
    odd = ("test+algorithm+using+algorithm+separators+and+lots+of+characters+to+excercise+overall+truncation:"
           "alsoSome=InTheEncodedSectionToShowHyphenReplacementAndLotsAndLotsOfCharactersToExcerciseEncodedTruncation")
    assert fallback_tag(odd) == ("test-algorithm-using-algorithm-s-"
                                 "alsoSome-InTheEncodedSectionToShowHyphenReplacementAndLotsAndLot")
    assert cosign_tags("sha256:" + "b" * 64) == tuple(f"sha256-{'b' * 64}{s}" for s in (".sig", ".att", ".sbom"))


def test_every_tag_gets_exactly_one_turn_in_each_six_hours_of_ten_minute_runs() -> None:
    period = schedule_period("rate(10 minutes)")
    keys = [f"docker.io/library/python:3.{n}" for n in range(50)]
    runs = [NOON + n * 600 for n in range(int(REFRESH // 600))]

    turns = {key: sum(refresh_due(key, now, period) for now in runs) for key in keys}

    assert period == 600 and set(turns.values()) == {1}


@pytest.mark.parametrize("schedule", ["rate(6 hours)", "rate(1 day)", "cron(0 12 * * ? *)"])
def test_runs_six_hours_or_more_apart_list_every_time(schedule: str) -> None:
    assert all(refresh_due("python:3", NOON + n * 3600, schedule_period(schedule)) for n in range(10))


def signed(registry: FakeRegistry, repository: str, digest: str, body: bytes) -> str:
    return registry.put(repository, cosign_tags(digest)[0], body, SIG)


def test_a_new_cosign_signature_on_an_unchanged_image_is_copied_next_run_with_heads_only_at_a_rate_limited_source(
) -> None:
    hub, destination = FakeRegistry(remaining=100, limit=200), FakeRegistry()
    digest = hub.put("team/app", "1.0", b"image")
    destination.put(APP_REPO, "1.0", b"image")
    signed(hub, "team/app", digest, b"signature")

    (item,) = plan(config(), endpoints(destination, {"registry.example": hub}), recorded=no_record, now=NOON).items

    assert (item.action, item.reason, item.task.referrers_only) == (Action.COPY, "referrers: 1 new", True)
    assert (item.task.cost, item.task.referrers_cost) == (2, 2)  # the copier's listing, and the .sig
    assert hub.gets() == [] and not [c for c in hub.calls if c[0] == "REFERRERS"]


def test_an_unchanged_image_at_a_rate_limited_source_is_listed_only_on_its_turn() -> None:
    hub, destination = FakeRegistry(remaining=100, limit=200), FakeRegistry()
    hub.put("team/app", "1.0", b"image")
    destination.put(APP_REPO, "1.0", b"image")
    runs = [NOON + n * 600 for n in range(36)]

    items = [plan(config(), endpoints(destination, {"registry.example": hub}), recorded=no_record,
                  now=now).items[0] for now in runs]

    listed = [i for i in items if i.action is Action.COPY]
    assert len(listed) == 1 and listed[0].reason == "referrers: listed every 6 h" and listed[0].task.cost == 1
    assert {i.action for i in items} == {Action.SKIP, Action.COPY} and hub.gets() == []


def test_an_unchanged_image_at_a_source_without_rate_limit_is_listed_every_run() -> None:
    source, destination = FakeRegistry(), FakeRegistry()
    digest = source.put("team/app", "1.0", b"image")
    destination.put(APP_REPO, "1.0", b"image")
    source.referrers[("team/app", digest)] = [{"mediaType": SIG, "digest": "sha256:" + "c" * 64, "size": 10,
                                               "artifactType": "application/spdx+json"}]

    (item,) = plan(config(), endpoints(destination, {"registry.example": source}), recorded=no_record).items

    assert (item.action, item.reason) == (Action.COPY, "referrers: 1 new")
    assert item.as_dict()["referrers"] == 1 and item.as_dict()["referrers_new"] == 1
    assert ("REFERRERS", "team/app", digest) in source.calls


def test_a_new_image_costs_its_listings_and_the_signatures_seen_with_heads() -> None:
    hub, destination = FakeRegistry(remaining=100, limit=200), FakeRegistry()
    digest = hub.put("team/app", "1.0", b"image")
    signed(hub, "team/app", digest, b"signature")

    (item,) = plan(config(), endpoints(destination, {"registry.example": hub}), recorded=no_record, now=NOON).items
    (off,) = plan(config(referrers=False), endpoints(destination, {"registry.example": hub}), recorded=no_record,
                  now=NOON).items

    assert (item.action, item.task.cost, item.task.referrers_cost, item.task.referrers) == (Action.COPY, 3, 2, True)
    assert (off.task.cost, off.task.referrers_cost, off.task.referrers, off.referrers) == (1, 0, False, None)


def test_a_referrers_task_survives_a_json_round_trip() -> None:
    task = Task(APP, "1.0", APP_REPO, "sha256:" + "a" * 64, "sha256:" + "a" * 64, cost=2, referrers=True,
                referrers_only=True, referrers_cost=2)

    assert Task.from_json(task.to_json()) == task
    with pytest.raises(ValueError, match="'referrers_only' must be true or false"):
        Task.from_json(task.to_json().replace('"referrers_only":true', '"referrers_only":"yes"'))


def test_a_referrers_only_copy_of_a_tag_held_to_a_signature_is_not_checked_again() -> None:
    from tests.support.cosign_layout import new_key, public_pem

    class NoCheck:
        unsigned: dict[str, float] = {}

        def check(self, *_: object) -> None:
            raise AssertionError("a referrers-only copy moves no tag: nothing to verify")

    hub, destination = FakeRegistry(remaining=100, limit=200), FakeRegistry()
    digest = hub.put("team/app", "1.0", b"image")
    destination.put(APP_REPO, "1.0", b"image")
    signed(hub, "team/app", digest, b"signature")
    cfg = parse_config({"images": [{"source": APP, "tags": ["1.0"]}],
                        "verify": {"cosign_public_key": public_pem(new_key())}})

    (item,) = plan(cfg, endpoints(destination, {"registry.example": hub}), recorded=no_record, now=NOON,
                   checker=NoCheck()).items  # type: ignore[arg-type]

    assert (item.action, item.task.referrers_only, item.task.verified) == (Action.COPY, True, False)


def test_a_moved_tag_and_an_up_to_date_tag_of_the_same_digest_stay_two_tasks() -> None:
    # Given `b` mirrored at the digest `a` has just moved to, and a new signature of that digest
    source, destination = FakeRegistry(), FakeRegistry()
    digest = source.put("team/app", "a", b"image")
    source.put("team/app", "b", b"image")
    destination.put(APP_REPO, "a", b"old")
    destination.put(APP_REPO, "b", b"image")
    signed(source, "team/app", digest, b"signature")
    cfg = parse_config({"images": [{"source": APP, "tags": ["b", "a"]}]})

    tasks = plan(cfg, endpoints(destination, {"registry.example": source}), recorded=no_record).tasks()

    # Then `a` is copied (tag and referrers) and `b` gets its referrers: one task each, `a` not left behind
    assert sorted((t.tag, t.referrers_only, t.also) for t in tasks) == [("a", False, ()), ("b", True, ())]

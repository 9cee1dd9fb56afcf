"""Planning with in-memory registries: expansion, routing, digest comparison, quota budget."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ecr_mirror_cdk.config_parse import parse_config
from lambdas.mirror.planning.budget import DEFAULT_INDEX_CHILDREN, Probe, apply_budget
from lambdas.mirror.planning.plan import expand_tags, plan
from lambdas.mirror.planning.task import Action, PlanItem, SupersededTask, Task

from .fakes import OCI_INDEX, FakeRegistry, endpoints, index, no_record

APP = "registry.example/team/app"
APP_REPO = "mirror/registry.example/team/app"


def config(*images: dict[str, Any], reserve: int = 20, **top: Any) -> Any:
    return parse_config({"images": list(images), "sync": {"quota_reserve": reserve}, **top})


def test_tag_regex_full_matches_follow_explicit_tags_without_a_manifest_get() -> None:
    source = FakeRegistry()
    for tag in ("22.1.0-bookworm-slim", "x22.1.0-bookworm-slim", "22.1.0-bookworm-slim-rc", "22.11.3-bookworm-slim"):
        source.put("team/app", tag)
    image = config({"source": APP, "tags": ["latest"], "tag_regex": r"22\.\d+\.\d+-bookworm-slim"}).images[0]

    tags = expand_tags(image, lambda: source.list_tags("team/app"))

    assert tags == ["latest", "22.1.0-bookworm-slim", "22.11.3-bookworm-slim"]
    assert source.gets() == []


def test_unchanged_tag_is_skipped_with_heads_only() -> None:
    source, destination = FakeRegistry(), FakeRegistry()
    digest = source.put("team/app", "1.0", b"same")
    destination.put(APP_REPO, "1.0", b"same")

    result = plan(config({"source": APP, "tags": ["1.0"]}), endpoints(destination, {"registry.example": source}),
                  recorded=no_record)

    assert [(i.action, i.task.source_digest, i.task.destination_digest) for i in result.items] == [
        (Action.SKIP, digest, digest)]
    assert source.gets() == [] and destination.gets() == []


def test_changed_single_manifest_is_copied_at_a_cost_of_one_get() -> None:
    source, destination = FakeRegistry(), FakeRegistry()
    source.put("team/app", "1.0", b"new")
    old = destination.put(APP_REPO, "1.0", b"old")

    (item,) = plan(config({"source": APP, "tags": ["1.0"]}, referrers=False),
                   endpoints(destination, {"registry.example": source}), recorded=no_record).items

    assert (item.action, item.task.cost, item.task.destination_digest, item.reason) == (Action.COPY, 1, old, "changed")


def test_missing_source_tag_fails_the_item_only() -> None:
    source, destination = FakeRegistry(), FakeRegistry()
    source.put("team/app", "1.0")

    items = plan(config({"source": APP, "tags": ["1.0", "gone"]}),
                 endpoints(destination, {"registry.example": source}), recorded=no_record).items

    assert [(i.task.tag, i.action) for i in items] == [("1.0", Action.COPY), ("gone", Action.FAILED)]


def test_filtered_index_is_up_to_date_when_the_destination_recorded_the_source_digest() -> None:
    source, destination = FakeRegistry(), FakeRegistry()
    digest = source.put("team/app", "1.0", index(4), OCI_INDEX)
    destination.put(APP_REPO, "1.0", index(1), OCI_INDEX)  # the filtered index has its own digest
    asked: list[tuple[str, str, Any]] = []

    def recorded(_: object, repository: str, tag: str, *, platforms: Any = None) -> str:
        asked.append((repository, tag, platforms))
        return digest

    (item,) = plan(config({"source": APP, "tags": ["1.0"], "platforms": ["linux/amd64"]}),
                   endpoints(destination, {"registry.example": source}), recorded=recorded).items

    assert item.action is Action.SKIP and asked == [(APP_REPO, "1.0", ("linux/amd64",))]
    assert source.gets() == []


def test_filtered_index_costs_the_index_plus_each_platform_and_its_attestation() -> None:
    source, destination = FakeRegistry(), FakeRegistry()
    source.put("team/app", "1.0", index(6), OCI_INDEX)
    destination.put(APP_REPO, "1.0", index(2, "old"), OCI_INDEX)

    (item,) = plan(config({"source": APP, "tags": ["1.0"], "platforms": ["linux/amd64", "linux/arm64"]},
                          referrers=False),
                   endpoints(destination, {"registry.example": source}), recorded=no_record).items

    assert (item.action, item.task.cost, item.task.platforms) == (Action.COPY, 5, ("linux/amd64", "linux/arm64"))


def test_unfiltered_index_cost_is_learnt_from_the_previous_copy_in_the_destination() -> None:
    source, destination = FakeRegistry(), FakeRegistry()
    source.put("team/app", "1.0", index(6), OCI_INDEX)
    source.put("team/app", "2.0", index(6, "two"), OCI_INDEX)
    destination.put(APP_REPO, "1.0", index(3, "old"), OCI_INDEX)

    items = plan(config({"source": APP, "tags": ["1.0", "2.0"]}, referrers=False),
                 endpoints(destination, {"registry.example": source}), recorded=no_record).items

    assert [i.task.cost for i in items] == [1 + 3, 1 + DEFAULT_INDEX_CHILDREN]
    assert source.gets() == []


def test_copies_beyond_the_remaining_quota_minus_the_reserve_are_deferred() -> None:
    hub, destination = FakeRegistry(remaining=25, limit=100), FakeRegistry()
    for n in range(7):
        hub.put("team/app", f"v{n}")

    result = plan(config({"source": APP, "tags": [f"v{n}" for n in range(7)]}, reserve=20, referrers=False),
                  endpoints(destination, {"registry.example": hub}), recorded=no_record)

    assert [i.action for i in result.items] == [Action.COPY] * 5 + [Action.DEFERRED] * 2
    assert "quota" in result.items[-1].reason
    quota = result.quotas["registry.example"]
    assert (quota.remaining, quota.planned, quota.available) == (25, 5, 0)


def test_budget_lets_a_cheaper_later_copy_through_when_an_earlier_one_does_not_fit() -> None:
    def probe(tag: str, cost: int) -> Probe:
        return Probe(PlanItem(Task(APP, tag, APP_REPO, cost=cost), Action.COPY), remaining=23, limit=100)

    items, quotas = apply_budget([probe("big", 5), probe("small", 1)], reserve=20)

    assert [i.action for i in items] == [Action.DEFERRED, Action.COPY]
    assert quotas["registry.example"].planned == 1


def test_an_upstream_without_rate_limit_headers_has_no_budget() -> None:
    source, destination = FakeRegistry(), FakeRegistry()
    for n in range(30):
        source.put("team/app", f"v{n}")

    result = plan(config({"source": APP, "tag_regex": "v.*"}, reserve=10_000),
                  endpoints(destination, {"registry.example": source}), recorded=no_record)

    assert result.counts() == {"copy": 30} and result.quotas == {}


def test_a_429_defers_the_rest_of_that_upstream_without_asking_it_again() -> None:
    hub, other, destination = FakeRegistry(throttle=True), FakeRegistry(), FakeRegistry()
    other.put("org/tool", "1")

    result = plan(config({"source": APP, "tags": ["a", "b", "c"]}, {"source": "quay.example/org/tool", "tags": ["1"]}),
                  endpoints(destination, {"registry.example": hub, "quay.example": other}),
                  recorded=no_record, workers=1)

    assert [i.action for i in result.items] == [Action.DEFERRED] * 3 + [Action.COPY]
    assert result.items[0].retry_after == 30.0
    assert hub.calls == [("HEAD", "team/app", "a")]


def test_a_429_on_the_tag_list_defers_the_whole_image() -> None:
    hub, destination = FakeRegistry(throttle=True), FakeRegistry()

    (item,) = plan(config({"source": APP, "tag_regex": ".*"}), endpoints(destination, {"registry.example": hub}),
                   recorded=no_record).items

    assert (item.action, item.task.tag) == (Action.DEFERRED, "*")


def test_an_image_on_a_registry_a_cache_rule_covers_is_copied_directly_into_its_mirror_repository() -> None:
    hub, destination = FakeRegistry(), FakeRegistry()
    hub.put("library/python", "3.13-slim", b"py")

    (item,) = plan(config({"source": "python", "tags": ["3.13-slim"]}, {"source": APP, "tags": ["1"]}),
                   endpoints(destination, {"docker.io": hub, "registry.example": FakeRegistry()}),
                   recorded=no_record).items[:1]

    assert (item.action, item.task.repository) == (Action.COPY, "mirror/docker.io/library/python")
    assert item.task.mount_from == (APP_REPO,)
    assert ("HEAD", "mirror/docker.io/library/python", "3.13-slim") in destination.calls


def test_a_filtered_index_costs_only_the_kept_platforms() -> None:
    hub, destination = FakeRegistry(), FakeRegistry()
    hub.put("library/python", "3.13-slim", index(6), OCI_INDEX)
    image = {"source": "python", "tags": ["3.13-slim"], "platforms": ["linux/amd64"], "referrers": False}

    (item,) = plan(config(image), endpoints(destination, {"docker.io": hub}), recorded=no_record).items

    assert item.task.cost == 1 + 2


def test_a_task_queued_by_an_earlier_version_as_a_cache_warm_is_refused_as_superseded() -> None:
    body = json.dumps({"source": "python", "tag": "3.13-slim", "repository": "docker-hub/library/python",
                       "via": "docker-hub"})

    with pytest.raises(SupersededTask, match="the next plan queues it as a direct copy"):
        Task.from_json(body)


def test_task_survives_a_json_round_trip() -> None:
    task = Task(APP, "1.0", APP_REPO, "sha256:" + "a" * 64, None, ("linux/amd64",), 3, ("other/repo",))

    assert Task.from_json(task.to_json()) == task


@pytest.mark.parametrize("body", ["not json", "[]", '{"source": "python", "tag": "x"}',
                                  '{"source": "Bad Ref", "tag": "1", "repository": "r"}',
                                  '{"source": "python", "tag": "1", "repository": "r", "extra": 1}'])
def test_malformed_task_bodies_raise_value_error(body: str) -> None:
    with pytest.raises(ValueError):
        Task.from_json(body)

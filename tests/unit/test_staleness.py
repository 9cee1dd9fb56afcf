"""Staleness per upstream: when the planner first saw each pending change, and what it emits."""

from __future__ import annotations

import json

import pytest

from lambdas.mirror.aws.observability import record_plan
from lambdas.mirror.planning.staleness import MAX_REMEMBERED, change_key, track, trimmed
from lambdas.mirror.planning.task import Action, Plan, PlanItem, Quota, Task

OLD, NEW = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def item(source: str, action: Action, digest: str | None = NEW, tag: str = "1") -> PlanItem:
    return PlanItem(Task(source, tag, f"docker-hub/{source}", source_digest=digest), action)


def test_a_pending_change_ages_from_the_run_that_first_saw_it_until_a_run_finds_it_mirrored() -> None:
    # Given a change of python:1 first seen at t=1000, still pending at t=1600
    first, ages_first = track(Plan([item("python", Action.COPY)]), {}, 1000.0)
    later, ages_later = track(Plan([item("python", Action.DEFERRED)]), first, 1600.0)

    # When a run at t=2200 finds the destination at that digest
    done, ages_done = track(Plan([item("python", Action.SKIP)]), later, 2200.0)

    # Then its age was 0, then 600 s, and it is forgotten once mirrored (age 0, not missing)
    assert ages_first == {"docker.io": 0.0} and ages_later == {"docker.io": 600.0}
    assert later == {change_key("docker.io/library/python:1", NEW): 1000.0}
    assert (done, ages_done) == ({}, {"docker.io": 0.0})


def test_each_upstream_reports_its_oldest_pending_change() -> None:
    # Given changes seen earlier on two upstreams, and a new one on Docker Hub
    seen = {change_key("docker.io/library/python:1", NEW): 100.0,
            change_key("quay.io/prometheus/node-exporter:1", NEW): 400.0}
    plan = Plan([item("python", Action.COPY), item("node", Action.COPY),
                 item("quay.io/prometheus/node-exporter", Action.FAILED), item("ghcr.io/org/app", Action.SKIP)])

    # When a run at t=1000 plans them
    pending, ages = track(plan, seen, 1000.0)

    # Then each upstream's age is its oldest change's; an up-to-date upstream reports 0
    assert ages == {"docker.io": 900.0, "quay.io": 600.0, "ghcr.io": 0.0}
    assert len(pending) == 3


def test_a_new_digest_on_the_same_tag_is_a_new_change() -> None:
    seen = {change_key("docker.io/library/python:1", OLD): 100.0}
    _, ages = track(Plan([item("python", Action.COPY, digest=NEW)]), seen, 1000.0)
    assert ages == {"docker.io": 0.0}


def test_a_tag_that_could_not_be_checked_is_not_counted() -> None:
    pending, ages = track(Plan([item("python", Action.DEFERRED, digest=None)]), {}, 1000.0)
    assert (pending, ages) == ({}, {"docker.io": 0.0})


def test_trimming_keeps_the_oldest_changes_which_decide_the_age() -> None:
    pending = {f"k{n}": float(n) for n in range(MAX_REMEMBERED + 20)}
    kept = trimmed(pending)
    assert len(kept) == MAX_REMEMBERED and min(kept.values()) == 0.0 and max(kept.values()) == MAX_REMEMBERED - 1
    assert len(json.dumps(kept, separators=(",", ":"))) < 4096  # a standard SSM parameter


def test_the_plan_metrics_carry_an_upstream_dimension(capsys: pytest.CaptureFixture[str]) -> None:
    # Given a plan with a deferred Docker Hub tag, a copy from quay.io and Docker Hub's quota
    plan = Plan([item("python", Action.DEFERRED), item("python", Action.SKIP, tag="2"),
                 item("quay.io/prometheus/node-exporter", Action.COPY)],
                quotas={"docker.io": Quota("docker.io", remaining=37, limit=100)})

    # When the planner records it with the staleness it tracked
    record_plan(plan, {"docker.io": 1200.0, "quay.io": 0.0})

    # Then one EMF line per upstream metric is printed, dimensioned by service and upstream
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    values = {}
    for line in lines:
        [directive] = line["_aws"]["CloudWatchMetrics"]
        [metric] = directive["Metrics"]
        assert directive["Namespace"] == "EcrMirror"
        assert directive["Dimensions"] == [["service", "upstream"]]
        [value] = line[metric["Name"]]
        values[(metric["Name"], line["upstream"])] = value
    assert values == {
        ("UpstreamImagesDeferred", "docker.io"): 1.0, ("UpstreamStalenessSeconds", "docker.io"): 1200.0,
        ("UpstreamQuotaRemaining", "docker.io"): 37.0,
        ("UpstreamImagesDeferred", "quay.io"): 0.0, ("UpstreamStalenessSeconds", "quay.io"): 0.0,
    }


def test_the_state_with_signature_memos_still_fits_a_standard_ssm_parameter() -> None:
    # Given 100 unsigned-digest memos (`unsigned:` keys), then 100 newer pending changes, with sub-second times
    now = 1_765_000_000.123456
    pending = {f"unsigned:{change_key('memo', str(n))}": now + n for n in range(100)}
    pending |= {change_key(f"docker.io/library/app:{n}", f"sha256:{n}"): now + 200 + n for n in range(100)}

    # When the state is trimmed for saving
    kept = trimmed(pending)

    # Then its JSON fits SSM's 4 KB, and the oldest entries are the ones kept
    assert len(json.dumps(kept, separators=(",", ":"))) <= 4096
    assert min(kept.values()) == now and all(value <= min(set(pending.values()) - set(kept.values()))
                                             for value in kept.values())

"""The referrers benchmark on a tiny image: one line per image, and referrers costing what they should."""

from __future__ import annotations

import pytest

from tests.bench import referrers


def test_each_case_is_printed_and_two_referrers_cost_their_listing_and_two_manifests(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(referrers, "SCENARIOS", {"tiny": dict(kind="docker-v2", layers=1, layer_size=1024)})

    figures = referrers.run(rounds=1)

    out = capsys.readouterr().out.splitlines()
    assert out[1] == "tiny" and out[2].startswith("  sync     off: ") and out[3].startswith("  re-plan  off ")
    tiny = figures["tiny"]
    # off: the image's GET. On: plus the referrers API GET of the plan and of the copy (a source without rate
    # limit is listed when planned); with two referrers, plus each one's GET of the referrers tag and both
    # artifact manifests
    assert [tiny[case]["counted"] for case in ("off", "on, none", "on, 2 referrers")] == [1, 3, 7]
    # re-planned unchanged: HEADs only with referrers off; on, the listing too (a source without rate limit)
    assert [tiny[case]["replan_counted"] for case in ("off", "on, none", "on, 2 referrers")] == [0, 1, 2]

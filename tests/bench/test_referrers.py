"""The referrers benchmark on a tiny image: its lines, and referrers costing what they should at each source."""

from __future__ import annotations

import pytest

from tests.bench import referrers

CASES = ("off", "on, none", "on, 2 referrers")


def test_each_source_gets_a_line_and_referrers_cost_their_listings_and_artifacts(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(referrers, "SCENARIOS", {"tiny": dict(kind="docker-v2", layers=1, layer_size=1024)})

    figures = referrers.run(rounds=1)

    out = capsys.readouterr().out.splitlines()
    assert out[1] == "tiny"
    assert out[2].startswith("  no rate limit  sync: off ") and out[3].startswith("  rate-limited   sync: off ")
    free, limited = figures["tiny"]["no rate limit"], figures["tiny"]["rate-limited"]
    # Off: the image's GET. On: plus the copy's referrers API GET (the plan lists no new digest); with two
    # referrers, plus the GET of the referrers tag and both artifact manifests
    assert [free[case]["counted"] for case in CASES] == [1, 2, 5]
    assert [limited[case]["counted"] for case in CASES] == [1, 2, 5]
    # Planned again unchanged: HEADs only, except the listing where it costs no pulls
    assert [free[case]["replan_counted"] for case in CASES] == [0, 1, 2]
    assert [limited[case]["replan_counted"] for case in CASES] == [0, 0, 0]

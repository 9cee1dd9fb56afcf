"""The cost table's CloudWatch line counts what the stack synthesizes, not a number written down beside it."""

from __future__ import annotations

import pytest

from tests.infra.test_observability import ALARMS
from tests.simulate import cost
from tests.simulate.fleet import Day
from tests.simulate.run import Mode, Result


def test_the_alarms_line_counts_every_alarm_and_dashboard_of_the_synthesized_stack() -> None:
    rows = cost.lines(Result(Mode.MIRRORED, planner_runs=145), Day(builds=(), bumps=()))

    (row,) = [r for r in rows if r.item == "CloudWatch alarms and dashboard"]
    assert row.quantity == f"{len(ALARMS)} alarms, 1 dashboard"
    assert row.monthly == pytest.approx(len(ALARMS) * cost.PRICES["cw_alarm"].amount
                                        + cost.PRICES["cw_dashboard"].amount)

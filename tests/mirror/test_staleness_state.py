"""The planner's memory of pending changes, in SSM (moto server)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from lambdas.mirror.aws.state import ParameterState
from tests.support.moto import moto_client, moto_server

NAME = "/ecr-mirror/state/pending-changes"


@pytest.fixture
def ssm() -> Iterator[Any]:
    with moto_server() as endpoint:
        client = moto_client("ssm", endpoint)
        client.put_parameter(Name=NAME, Value="{}", Type="String")  # as the stack creates it
        yield client


def version(ssm: Any) -> int:
    return int(ssm.get_parameter(Name=NAME)["Parameter"]["Version"])


def test_what_one_run_saves_the_next_loads_and_an_unchanged_set_is_not_rewritten(ssm: Any) -> None:
    state = ParameterState(NAME, ssm=ssm)
    assert state.load() == {}

    state.save({}, {"abc": 1000.0})
    state.save({"abc": 1000.0}, {"abc": 1000.0})

    assert state.load() == {"abc": 1000.0}
    assert version(ssm) == 2  # created, then one write


def test_an_unreadable_state_counts_changes_from_now_and_does_not_stop_the_plan(ssm: Any) -> None:
    missing = ParameterState("/ecr-mirror/state/missing", ssm=ssm)
    assert missing.load() == {}
    ssm.put_parameter(Name=NAME, Value="not json", Type="String", Overwrite=True)
    assert ParameterState(NAME, ssm=ssm).load() == {}

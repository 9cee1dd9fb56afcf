from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.limiter import Limiter, ManualClock
from tests.support.registry import RegistryServer


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_000_000.0)


@pytest.fixture
def limiter_factory(registry: RegistryServer, clock: ManualClock) -> Iterator[Callable[..., Limiter]]:
    """A limiter in front of the test's registry, on the test's clock; stopped when the test ends."""
    started: list[Limiter] = []

    def start(**options: Any) -> Limiter:
        limiter = Limiter(registry.host, clock=clock, **options).start()
        started.append(limiter)
        return limiter

    yield start
    for limiter in started:
        limiter.stop()

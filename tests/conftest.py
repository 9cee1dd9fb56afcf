from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.ptc import PullThroughCache
from tests.support.registry import RegistryServer


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[Callable[..., RegistryServer]]:
    """Start loopback registries on demand; every one is stopped when the test ends."""
    started: list[RegistryServer] = []

    def start(name: str = "registry", **options: Any) -> RegistryServer:
        server = RegistryServer(tmp_path / "registries", name=f"{name}{len(started)}", **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def registry(registry_factory: Callable[..., RegistryServer]) -> RegistryServer:
    return registry_factory()


class Clock:
    """A clock tests move by hand: `clock.now += 86400`."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ptc_factory(tmp_path: Path, clock: Clock) -> Iterator[Callable[..., PullThroughCache]]:
    """Start ECR-faithful pull-through caches (tests/support/ptc.py) on the `clock` fixture."""
    started: list[PullThroughCache] = []

    def start(upstream: str, **options: Any) -> PullThroughCache:
        options.setdefault("clock", clock)
        cache = PullThroughCache(tmp_path / f"ptc{len(started)}", upstream, **options).start()
        started.append(cache)
        return cache

    yield start
    for cache in started:
        cache.stop()

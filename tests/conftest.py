from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

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

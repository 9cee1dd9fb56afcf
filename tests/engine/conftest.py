from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lambdas.mirror.oci.registry import RegistryClient
from tests.support.faults import FaultProxy
from tests.support.registry import RegistryServer
from tests.support.token_issuer import TokenIssuer


@pytest.fixture
def source(registry_factory: Callable[..., RegistryServer]) -> RegistryServer:
    return registry_factory("source")


@pytest.fixture
def destination(registry_factory: Callable[..., RegistryServer]) -> RegistryServer:
    return registry_factory("destination")


@pytest.fixture
def clients(source: RegistryServer, destination: RegistryServer) -> tuple[RegistryClient, RegistryClient]:
    return RegistryClient(source.host, max_retry_wait=5), RegistryClient(destination.host, max_retry_wait=5)


@pytest.fixture
def fault_proxy() -> Iterator[Callable[[str], FaultProxy]]:
    started: list[FaultProxy] = []

    def start(upstream: str) -> FaultProxy:
        proxy = FaultProxy(upstream).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def token_issuer(tmp_path: Path) -> Iterator[TokenIssuer]:
    with TokenIssuer(tmp_path / "issuer", users={"alice": "wonderland"}) as issuer:
        yield issuer

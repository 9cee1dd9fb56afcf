from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters import base

from lambdas.mirror.handlers import environment
from tests.support.faults import FaultProxy
from tests.support.moto import fake_aws_environment, moto_server


def _forget() -> None:
    parameters.clear_caches()
    base.DEFAULT_PROVIDERS.clear()  # their boto3 clients were bound to the previous test's environment
    environment.reset()


@pytest.fixture(autouse=True)
def fresh_runtime_state() -> Iterator[None]:
    _forget()
    yield
    _forget()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """boto3 (and Powertools Parameters) talk to moto with dummy credentials."""
    for key, value in fake_aws_environment(moto_endpoint).items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    _forget()
    return moto_endpoint


@pytest.fixture
def fault_proxies() -> Iterator[Callable[[str], FaultProxy]]:
    """Start fault proxies in front of registries (tests/support/faults.py); each is stopped after the test."""
    started: list[FaultProxy] = []

    def start(upstream: str) -> FaultProxy:
        started.append(FaultProxy(upstream).start())
        return started[-1]

    yield start
    for proxy in started:
        proxy.stop()

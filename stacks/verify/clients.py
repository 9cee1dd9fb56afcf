"""The AWS clients and the clock `make verify`'s checks use: made on first use, or given (tests give their own)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..set_token import aws_client

POLL = 10.0
# Lambda's longest timeout: a synchronous invoke is never read-timed-out (and retried) before the planner ends.
LAMBDA_READ_TIMEOUT = 15 * 60 + 30


@dataclass
class Clock:
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], float] = time.monotonic


@dataclass
class Clients:
    """One boto3 client per service, made on first use in `region` unless given."""

    region: str | None = None
    given: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, service: str) -> Any:
        if service not in self.given:
            from botocore.config import Config as BotoConfig

            options = {"read_timeout": LAMBDA_READ_TIMEOUT, "retries": {"total_max_attempts": 1}}
            self.given[service] = aws_client(service, self.region,
                                             config=BotoConfig(**options) if service == "lambda" else None)
        return self.given[service]


def client(service: str, given: Any) -> Any:
    """`given`, else a new client of `service` in the default region."""
    return given if given is not None else Clients()[service]

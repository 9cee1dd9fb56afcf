"""Handler settings: read from the environment once, validated, typed; wiring shared by both handlers."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..aws.connect import connect
from ..oci.endpoints import Endpoints
from ..settings import (
    ENV_QUEUE_URL,
    ENV_REGISTRY,
    ENV_REGISTRY_CREDENTIALS,
    ENV_SPEC_PARAMETER,
    ENV_STATE_PARAMETER,
)

SPEC_MAX_AGE = 300  # seconds a warm planner reuses the spec it read from SSM


class SettingsError(RuntimeError):
    """A required environment variable is missing; the message names it."""


@dataclass(frozen=True)
class Settings:
    spec_parameter: str | None
    queue_url: str | None
    registry: str | None  # None: the account's ECR
    credentials: tuple[tuple[str, str], ...]  # (registry host, secret name); a tuple keeps Settings hashable
    state_parameter: str | None = None  # where the planner remembers pending changes (staleness)

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, required: tuple[str, ...] = ()) -> Settings:
        for name in required:
            if not env.get(name):
                raise SettingsError(f"environment variable {name} is not set; the stack sets it on the function")
        return cls(
            spec_parameter=env.get(ENV_SPEC_PARAMETER) or None,
            queue_url=env.get(ENV_QUEUE_URL) or None,
            registry=env.get(ENV_REGISTRY) or None,
            credentials=_credentials(env.get(ENV_REGISTRY_CREDENTIALS) or "{}"),
            state_parameter=env.get(ENV_STATE_PARAMETER) or None,
        )


def _credentials(text: str) -> tuple[tuple[str, str], ...]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
        raise SettingsError(f"environment variable {ENV_REGISTRY_CREDENTIALS} must be a JSON object of "
                            f"registry host to secret name, got {text[:200]!r}")
    return tuple(sorted(value.items()))


@cache
def planner_settings() -> Settings:
    return Settings.from_env(os.environ, required=(ENV_SPEC_PARAMETER, ENV_QUEUE_URL))


@cache
def copier_settings() -> Settings:
    return Settings.from_env(os.environ)


@cache
def sqs_client() -> Any:
    """The copier sends throttled and unstarted tasks back to the queue."""
    import boto3

    return boto3.client("sqs")


_endpoints: dict[Settings, Endpoints] = {}


def endpoints_for(settings: Settings) -> Endpoints:
    """Clients kept across warm invocations (pooled connections, cached tokens) until ECR's token ages."""
    current = _endpoints.get(settings)
    if current is None or current.expired:
        current = _endpoints[settings] = connect(settings.registry, credentials=dict(settings.credentials))
    return current


def reset() -> None:
    """Forget settings and clients (tests change the environment between cases)."""
    planner_settings.cache_clear()
    copier_settings.cache_clear()
    sqs_client.cache_clear()
    _endpoints.clear()

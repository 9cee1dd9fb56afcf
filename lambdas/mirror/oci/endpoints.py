"""Which registry client serves what: the destination and each source registry.

Planning, copying, the Lambdas and the CLI all go through one `Endpoints`; tests build it from
in-memory fakes, `aws.connect.connect` builds it from real `RegistryClient`s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Endpoints:
    def __init__(self, destination: Any, *, sources: Callable[[str], Any], expires_at: float | None = None) -> None:
        self.destination = destination
        self._sources = sources
        self.expires_at = expires_at  # when the destination's credentials (ECR token) run out

    def source(self, registry: str) -> Any:
        """Client for a source registry, named as image references name it (`docker.io`)."""
        return self._sources(registry)

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and time.time() >= self.expires_at

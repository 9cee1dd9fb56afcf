"""The planner's memory between runs, in an SSM String parameter: when each pending change was first seen
(`planning.staleness`) and which digests were found unsigned (`planning.signatures`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..planning.staleness import trimmed
from .observability import logger


class ParameterState:
    """The remembered changes, as JSON in an SSM String parameter the stack creates (`{}` at first)."""

    def __init__(self, name: str, ssm: Any = None) -> None:
        self.name = name
        self._ssm = ssm

    @property
    def ssm(self) -> Any:
        if self._ssm is None:
            import boto3

            self._ssm = boto3.client("ssm")
        return self._ssm

    def load(self) -> dict[str, float]:
        """What the last run saved; empty (every change counts as new) if it cannot be read."""
        try:
            value = self.ssm.get_parameter(Name=self.name)["Parameter"]["Value"]
            data = json.loads(value)
            return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except Exception as err:  # noqa: BLE001 - staleness may under-report; the sync must not stop
            logger.warning(f"cannot read {self.name}; pending changes count from now: {err}")
            return {}

    def save(self, before: Mapping[str, float], pending: Mapping[str, float]) -> None:
        after = trimmed(pending)
        if after == dict(before):
            return  # most runs change nothing: no write
        try:
            self.ssm.put_parameter(Name=self.name, Value=json.dumps(after, separators=(",", ":")),
                                   Type="String", Overwrite=True)
        except Exception as err:  # noqa: BLE001 - as above
            logger.warning(f"cannot write {self.name}: {err}")

"""What a registry says about its limits: Docker Hub's `ratelimit-*` headers, `Retry-After` on a 429, and the
pull budget that keeps manifest GETs above `sync.quota_reserve` of what is left."""

from __future__ import annotations

import contextlib
import email.utils
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import QuotaReserved


@dataclass(frozen=True)
class RateLimit:
    """Docker Hub's pull quota as its headers state it; None fields when a header is absent."""

    limit: int | None
    remaining: int | None
    source: str | None

    @classmethod
    def from_headers(cls, headers: Any) -> RateLimit | None:
        limit, remaining = headers.get("ratelimit-limit"), headers.get("ratelimit-remaining")
        source = headers.get("docker-ratelimit-source")
        if limit is None and remaining is None and source is None:
            return None
        return cls(_leading_int(limit), _leading_int(remaining), source)


def _leading_int(value: str | None) -> int | None:
    """`100;w=21600` -> 100."""
    try:
        return int(value.split(";", 1)[0].strip()) if value is not None else None
    except ValueError:
        return None


def retry_after(value: str | None) -> float | None:
    """Seconds to wait, rounded up to a whole second (never early): delta-seconds or an HTTP-date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return float(max(math.ceil(seconds), 0)) if math.isfinite(seconds) else None


class PullBudget:
    """Keeps manifest GETs (what Docker Hub counts as pulls) above a floor of `ratelimit-remaining`.

    Every manifest response, HEAD or GET, states what is left; a GET in flight has not been
    counted in the latest figure yet, so it is reserved here until its own response arrives.
    Responses to concurrent GETs may arrive out of order, so while others are in flight the lower
    figure wins. Unknown until a response has said: the first GET of a process is let through
    (copy_image HEADs first when it is given a floor).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.remaining: int | None = None
        self._in_flight = 0

    def _update(self, remaining: int) -> None:
        if self.remaining is None or not self._in_flight:
            self.remaining = remaining
        else:
            self.remaining = min(self.remaining, remaining)

    def seen(self, rate: RateLimit | None) -> None:
        if rate is not None and rate.remaining is not None:
            with self._lock:
                self._update(rate.remaining)

    @contextlib.contextmanager
    def pull(self, floor: int | None, what: str) -> Iterator[Callable[[RateLimit | None], None]]:
        """Reserve one GET, or raise QuotaReserved; the caller hands the response's figure to the
        yielded function, which ends the reservation and records it in one step."""
        with self._lock:
            if floor is not None and self.remaining is not None and self.remaining - self._in_flight <= floor:
                raise QuotaReserved(f"GET {what} not sent: {self.remaining} pulls left"
                                    f"{f' ({self._in_flight} in flight)' if self._in_flight else ''}, "
                                    f"reserve {floor}; deferred")
            self._in_flight += 1
        open_ = [True]

        def answered(rate: RateLimit | None) -> None:
            with self._lock:
                if open_[0]:
                    open_[0] = False
                    self._in_flight -= 1
                if rate is not None and rate.remaining is not None:
                    self._update(rate.remaining)

        try:
            yield answered
        finally:
            answered(None)

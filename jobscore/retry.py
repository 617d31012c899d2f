"""Retrying calls to a dependency (Redis, Kafka): bounded exponential backoff with full jitter, and an
outage record that logs once per state change, counts every error and drives readiness.

The librdkafka / redis-py ``Retry(ExponentialBackoff(), n)`` habit: a call is tried ``attempts`` times
with ``uniform(0, min(max_s, base_s * 2**n))`` between tries; the last error is raised to the caller,
whose policy decides what an outage means (docs/operating.md "Faults and recovery"). Every failed try increments
the metric; only the first failure and the recovery are logged, so a long outage is two log lines.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import Counter

from jobscore.health import HEALTH, Health

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Delays between tries: full jitter under an exponential cap (no thundering herd after an outage)."""

    base_s: float = 0.05
    max_s: float = 2.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0.0, min(self.max_s, self.base_s * 2 ** min(attempt, 30)))


class Outage:
    """One dependency's state as seen by the calls to it: logged on change, exported as a readiness check
    (``health.set(check, …)``) and counted per operation in ``errors`` (a labelled Counter, label ``op``)."""

    def __init__(self, check: str, errors: Counter, health: Health = HEALTH) -> None:
        self.check = check
        self.errors = errors
        self.health = health
        self.down_since: float | None = None
        self.failures = 0  # failed tries in the current outage

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, op: str, err: BaseException) -> None:
        self.errors.labels(op).inc()
        self.failures += 1
        if self.down_since is None:
            self.down_since = time.monotonic()
            reason = f"{op}: {type(err).__name__}: {err}"[:300]
            log.error(
                "%s unavailable: retrying with backoff (logged once until it recovers)",
                self.check,
                extra={"check": self.check, "op": op, "error": reason},
            )
            self.health.set(self.check, False, reason)

    def recovered(self) -> None:
        if self.down_since is None:
            return
        log.info(
            "%s available again",
            self.check,
            extra={
                "check": self.check,
                "outage_s": round(time.monotonic() - self.down_since, 3),
                "failed_tries": self.failures,
            },
        )
        self.down_since = None
        self.failures = 0
        self.health.set(self.check, True)


async def retry(
    fn: Callable[[], Awaitable[T]],
    *,
    op: str,
    retry_on: tuple[type[BaseException], ...],
    attempts: int,
    backoff: Backoff,
    outage: Outage,
) -> T:
    """``await fn()`` up to ``attempts`` times; errors in ``retry_on`` are retried, the last one raised."""
    for attempt in range(attempts):
        try:
            result = await fn()
        except retry_on as e:
            outage.failed(op, e)
            if attempt + 1 >= attempts:
                raise
            await asyncio.sleep(backoff.delay(attempt))
        else:
            outage.recovered()
            return result
    raise AssertionError("attempts must be >= 1")  # pragma: no cover - the loop returns or raises

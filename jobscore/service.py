"""The service shell: what the worker and the summarizer run around their data paths, written once.

A consuming service here is a data path (the service's own ``run``) inside the same shell:

- **health and build info**: the readiness checks reset, dependencies not ready until first probed,
  ``draining`` until stopped, the build-info metric;
- **start-up**, each step logged (a start-up that hangs says where): topics ensured, the producer, the
  broker-loss guard (`TopicGuard`) on the topics the service's commits rely on, the group consumer with
  its rebalance listener, then the dependency probes (broker, Redis);
- **the guarded commit**: offsets move only if the broker that acknowledged the outputs still holds their
  topics (`BrokerLost` propagates: never commit into the void); a failed broker check postpones the commit;
  a commit refused after a rebalance is counted and logged (the new owner replays the records);
- **the Redis-outage wait**: back off until Redis is back or a stop is asked;
- **stop and close**, and `run_service`: start unless a stop signal comes first (the start-up interrupt),
  forward the signal, run, close.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from jobscore import metrics
from jobscore.cache import SummaryCache
from jobscore.health import HEALTH, start_probes
from jobscore.kafka import BrokerLost, TopicGuard, make_consumer, make_producer
from jobscore.settings import CommonSettings
from jobscore.topics import ensure_topics

log = logging.getLogger(__name__)

T = TypeVar("T")


class Committed(enum.Enum):
    """What became of a guarded commit."""

    DONE = "done"
    NOTHING = "nothing"  # no offsets to commit
    POSTPONED = "postponed"  # the broker check failed (not a loss): try again with the next commit
    REBALANCED = "rebalanced"  # the group moved the partitions: their new owner replays the records


class Shell:
    """The shell around one service's data path (module docstring). The service owns the data path and
    decides what to commit; the shell owns the clients and how a commit is made safe."""

    def __init__(
        self,
        settings: CommonSettings,
        *,
        service: str,
        cache: SummaryCache,
        group_id: str,
        reads: Sequence[str],
        guards: Sequence[str],
        listener: Any = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.cache = cache
        self.group_id = group_id
        self.reads = list(reads)
        self.guards = list(guards)
        self.listener = listener  # an aiokafka ConsumerRebalanceListener, or None
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.guard: TopicGuard | None = None
        self.stopping = asyncio.Event()
        self._probes: asyncio.Task[None] | None = None
        self._topics_checked = 0.0  # monotonic time of the last broker check (a commit's or the timer's)

    def reset_health(self, own: Mapping[str, tuple[bool, str]], **build: str) -> None:
        """Readiness from scratch: the service's own checks (``own``), broker and Redis not ready until first
        probed, draining until stopped; and the build-info metric."""
        HEALTH.reset()
        HEALTH.liveness_timeout_s = self.settings.liveness_timeout_s
        for check, (ok, reason) in own.items():
            HEALTH.set(check, ok, reason)
        for dep in ("broker", "redis"):
            HEALTH.set(dep, False, "not probed yet")
        HEALTH.set("draining", True)
        metrics.set_build(self.service, **build)

    async def start(self) -> None:
        """Topics, producer, guard, consumer, probes: each step logged (a hang says where), any of them
        interruptible by `run_service`'s stop signal."""
        s = self.settings
        log.info("start-up: ensuring topics", extra={"bootstrap": s.kafka_bootstrap})
        await ensure_topics(s)
        log.info("start-up: connecting the producer")
        self.producer = make_producer(s)
        await self.producer.start()
        self.guard = TopicGuard(self.producer.client, self.guards)
        await self.guard.start()
        log.info("start-up: joining the consumer group", extra={"group": self.group_id})
        self.consumer = make_consumer(s, self.group_id)
        self.consumer.subscribe(self.reads, listener=self.listener)
        await self.consumer.start()
        self._probes = start_probes(
            {"broker": self.consumer.topics, "redis": self.cache.client.ping}, s.health_probe_interval_s
        )

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> Committed:
        """Commit ``offsets`` if the broker still holds the topics of every output acknowledged so far.

        Take the offsets *before* calling: all their outputs were acknowledged before the check, so a passing
        check means the broker still had their topics after acknowledging them. Raises `BrokerLost`."""
        if not offsets:
            return Committed.NOTHING
        assert self.consumer is not None, "start() first"
        failed = await self._check_topics()
        if failed is not None:
            log.warning("broker check failed; commit postponed", extra={"error": repr(failed)})
            return Committed.POSTPONED
        try:
            await self.consumer.commit(dict(offsets))
        except CommitFailedError as e:
            # The group rebalanced under us: these records go to their new owner, which processes them again
            # (rankings are deduplicated by request id; summaries are idempotent writes).
            metrics.KAFKA_ERRORS.labels("commit").inc()
            log.warning("commit failed after a rebalance; the records will be replayed", extra={"error": str(e)})
            return Committed.REBALANCED
        return Committed.DONE

    async def check_topics_if_due(self) -> None:
        """The broker check on a timer (every ``health_probe_interval_s``), so an idle service notices a broker
        that lost its topics too, not only at its next commit. Raises `BrokerLost`; a check that fails for
        another reason is left to the probes and the next commit."""
        if self.guard is None or time.monotonic() - self._topics_checked < self.settings.health_probe_interval_s:
            return
        failed = await self._check_topics()
        if failed is not None:
            log.debug("timed broker check failed", extra={"error": repr(failed)})

    async def _check_topics(self) -> KafkaError | None:
        """The broker-loss guard's check, made by both the commit and the timer: `BrokerLost` propagates; any
        other Kafka error is counted and returned (the broker did not answer: nothing can be concluded)."""
        assert self.guard is not None, "start() first"
        self._topics_checked = time.monotonic()
        try:
            await self.guard.check()
        except BrokerLost:
            raise
        except KafkaError as e:
            metrics.KAFKA_ERRORS.labels("metadata").inc()
            return e
        return None

    async def fetching(self, poll: Awaitable[T]) -> T:
        """``poll`` (a consumer fetch); a Kafka error is counted and marks ``broker`` not ready before it is
        raised (the service stops; its group replays what it had not committed)."""
        try:
            return await poll
        except KafkaError as e:
            metrics.KAFKA_ERRORS.labels("fetch").inc()
            HEALTH.set("broker", False, f"fetch failed: {e!r}")
            raise

    async def wait_for_redis(self) -> bool:
        """After `CacheUnavailable`: wait one backoff (alive meanwhile: waiting on purpose). False when a stop
        was asked instead — the caller leaves its work uncommitted for the group to replay."""
        HEALTH.beat()
        if self.stopping.is_set():
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), self.cache.backoff.max_s)
        return not self.stopping.is_set()

    def stop(self, reason: str) -> None:
        HEALTH.set("draining", False, reason)
        self.stopping.set()

    async def close(self) -> None:
        if self._probes is not None:
            self._probes.cancel()
            self._probes = None
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None


class ShellService:
    """Base of a service that runs in a `Shell`: its clients are the shell's, and stopping is the shell's."""

    shell: Shell
    stop_reason = "stopping"  # the readiness reason while it drains

    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        return self.shell.consumer

    @property
    def producer(self) -> AIOKafkaProducer | None:
        return self.shell.producer

    def stop(self) -> None:
        """Stop consuming; what is in flight is finished (answered or summarized) and committed first."""
        self.shell.stop(self.stop_reason)


class Service(Protocol):
    """A service `run_service` can run: the worker and the summarizer."""

    async def start(self) -> None: ...

    async def run(self) -> None: ...

    def stop(self) -> None: ...

    async def close(self) -> None: ...


async def run_service(
    svc: Service, stop: asyncio.Event | None, name: str, done: Callable[[], Mapping[str, Any]] | None = None
) -> bool:
    """Start ``svc`` unless ``stop`` is set first (start-up may hang on a sick broker; a signal abandons it:
    nothing was consumed, nothing to commit), then run it until it returns, forwarding ``stop``; close it
    either way. True when it started. ``done`` gives the counts for the stopped log line."""
    if not await _start_unless_stopped(svc, stop, name):
        return False

    async def forward_stop() -> None:
        assert stop is not None
        await stop.wait()
        svc.stop()

    watcher = asyncio.create_task(forward_stop()) if stop is not None else None
    try:
        await svc.run()
    finally:
        if watcher is not None:
            watcher.cancel()
        await svc.close()
        log.info(f"{name} stopped", extra=dict(done() if done is not None else {}))
    return True


async def _start_unless_stopped(svc: Service, stop: asyncio.Event | None, name: str) -> bool:
    if stop is None:
        await svc.start()
        return True
    starting = asyncio.create_task(_awaited(svc.start()), name=f"{name}-start")
    stopping = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if starting.done():
        starting.result()  # a failed start-up raises here
        return True
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await starting
    await svc.close()
    log.info(f"{name}: stopped during start-up: nothing was consumed")
    return False


async def _awaited(start: Awaitable[None]) -> None:
    await start

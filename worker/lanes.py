"""The two request lanes as the worker's consumer sees them: what each poll takes from which lane, and
backpressure per lane.

Online requests and bulk ones (backfills) share one consumer group on two topics. A poll takes online records
first and only a few bulk requests, and bulk only while a few bulk batches' worth is queued, so bulk intake
(Redis reads, tokenizing on the engine's cores) never sits in front of an online poll. Under backpressure
the bulk lane pauses at half of ``max_queued_items`` (resumes at a quarter), the online lane only at the
full limit (resumes at half).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from jobscore import metrics
from jobscore.service import Shell
from jobscore.settings import WorkerSettings
from worker.batching import TokenBudgetBatcher

log = logging.getLogger(__name__)

# Bulk work taken in ahead of the engine: at most this many bulk batches' worth queued.
BULK_BATCHES_QUEUED = 4
# One poll's records, by partition (what AIOKafkaConsumer.getmany returns).
Records = dict[TopicPartition, list[ConsumerRecord]]


class Lanes:
    """Polls and pauses the shell's consumer by lane (module docstring)."""

    def __init__(self, settings: WorkerSettings, shell: Shell, batcher: TokenBudgetBatcher, bulk_topic: str) -> None:
        self.settings = settings
        self.shell = shell
        self.batcher = batcher
        self.bulk_topic = bulk_topic
        self.paused = False  # the online lane (and with it everything) is paused
        self.bulk_paused = False  # the bulk lane is paused (before the online lane is)
        self.pauses = 0

    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        return self.shell.consumer

    async def poll(self) -> tuple[Records, Records]:
        """One poll per lane: up to ``max_records`` online requests, then up to ``max_bulk_records`` bulk ones,
        both from what the fetcher already holds; only when neither lane has any does it wait (up to
        ``poll_timeout_ms``) for the first record of either. Few bulk requests per poll keep bulk intake — Redis
        reads and tokenizing, on the cores the engine uses — from delaying the next online poll; paused
        partitions (backpressure) return nothing."""
        assert self.consumer is not None
        s = self.settings
        tps = self.consumer.assignment()
        if not tps:  # nothing assigned yet (joining): wait, the group join runs meanwhile
            await self.consumer.getmany(timeout_ms=s.poll_timeout_ms, max_records=1)
            return {}, {}
        online_tps = [tp for tp in tps if tp.topic != self.bulk_topic]
        # More bulk queued than a few batches adds nothing to engine use, but taking it in delays online work.
        bulk_room = self.batcher.queued("bulk") < BULK_BATCHES_QUEUED * self.batcher.max_bulk_items
        bulk_tps = [tp for tp in tps if tp.topic == self.bulk_topic] if bulk_room else []
        online = await self.consumer.getmany(*online_tps, max_records=s.max_records) if online_tps else {}
        bulk = await self.consumer.getmany(*bulk_tps, max_records=s.max_bulk_records) if bulk_tps else {}
        if online or bulk:
            return online, bulk
        if not bulk_room:
            # Bulk is waiting for room, online is idle: wait for online records or for the engine to take a
            # batch (then there is room for more bulk), whichever comes first — waiting for online records
            # alone would leave a fast engine idle once it has eaten the bulk queue.
            return await self._online_or_room(online_tps), {}
        first = await self.consumer.getmany(
            *online_tps, *bulk_tps, timeout_ms=s.poll_timeout_ms, max_records=s.max_bulk_records
        )
        return (
            {tp: r for tp, r in first.items() if tp.topic != self.bulk_topic},
            {tp: r for tp, r in first.items() if tp.topic == self.bulk_topic},
        )

    async def _online_or_room(self, online_tps: list[TopicPartition]) -> Records:
        """Online records if any arrive within ``poll_timeout_ms``; {} as soon as the engine takes a batch."""
        assert self.consumer is not None
        s = self.settings
        tasks: list[asyncio.Future[Any]] = [asyncio.ensure_future(self.batcher.wait_cut())]
        if online_tps:
            tasks.append(
                asyncio.ensure_future(
                    self.consumer.getmany(*online_tps, timeout_ms=s.poll_timeout_ms, max_records=s.max_records)
                )
            )
        try:
            await asyncio.wait(tasks, timeout=s.poll_timeout_ms / 1e3, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()  # a no-op on a finished task; a getmany cancelled while waiting has taken no records
        fetch = tasks[1] if online_tps else None
        # Finished (even after wait() returned for the other task): its records are taken from the fetcher, so
        # they must be processed — dropping them would skip their offsets.
        if fetch is not None and fetch.done() and not fetch.cancelled():
            return cast(Records, fetch.result())
        return {}

    def backpressure(self) -> None:
        assert self.consumer is not None
        queued = len(self.batcher)
        limit = self.settings.max_queued_items
        # The bulk lane yields first: its partitions pause at half the limit (resume at a quarter), so a
        # saturating backfill leaves the other half of the queue to online requests. (How much bulk is taken
        # in per poll is `poll`'s business: it stops taking bulk once a few bulk batches are queued, without
        # pausing, so the fetcher keeps the next bulk records ready.)
        bulk_tps = [tp for tp in self.consumer.assignment() if tp.topic == self.bulk_topic]
        if not self.bulk_paused and queued >= max(1, limit // 2):
            self.consumer.pause(*bulk_tps)
            self.bulk_paused = True
            metrics.LANE_PAUSED.labels("bulk").set(1)
        elif self.bulk_paused and queued <= limit // 4 and not self.paused:
            self.consumer.resume(*bulk_tps)
            self.bulk_paused = False
            metrics.LANE_PAUSED.labels("bulk").set(0)
        if not self.paused and queued >= limit:
            self.consumer.pause(*self.consumer.assignment())
            self.paused = True
            self.pauses += 1
            metrics.PAUSED.set(1)
            metrics.LANE_PAUSED.labels("online").set(1)
            log.info("backpressure: partitions paused", extra={"queued_items": queued})
        elif self.paused and queued <= limit // 2:
            self.consumer.resume(*(tp for tp in self.consumer.assignment() if tp.topic != self.bulk_topic))
            self.paused = False
            metrics.PAUSED.set(0)
            metrics.LANE_PAUSED.labels("online").set(0)
            log.info("backpressure: partitions resumed", extra={"queued_items": queued})

"""Client side: publish postings and scoring requests, await rankings, tail a topic.

`RankingWaiter` reads the results topic from its current end (no consumer group: it observes, it does
not take part in delivery) and resolves one future per request id. It deduplicates: the first ranking
for an id wins; later duplicates (at-least-once redelivery) are counted and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from jobscore.kafka import client_security_kwargs, make_producer, topic_name
from jobscore.settings import CommonSettings
from schemas import POSTINGS, RANKINGS, SCORE_REQUESTS, JobPosted, Ranking, ScoreRequest, TopicSpec

log = logging.getLogger(__name__)


async def publish_postings(settings: CommonSettings, postings: Iterable[JobPosted]) -> int:
    producer = make_producer(settings)
    await producer.start()
    n = 0
    try:
        topic = topic_name(settings, POSTINGS)
        futs = []
        for p in postings:
            # Keyed by job id: every version of a posting lands on one partition, in order.
            futs.append(await producer.send(topic, POSTINGS.encode(p), key=p.job_id.encode()))
            n += 1
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return n


def new_request(
    query: str,
    candidates: Sequence[str],
    top_k: int = 10,
    deadline_s: float | None = None,
    request_id: str | None = None,
) -> ScoreRequest:
    now = time.time()
    return ScoreRequest(
        request_id=request_id or uuid.uuid4().hex,
        query=query,
        candidates=list(candidates),
        top_k=top_k,
        deadline=now + deadline_s if deadline_s else None,
        created_at=now,
    )


async def publish_requests(settings: CommonSettings, requests: Iterable[ScoreRequest]) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        topic = topic_name(settings, SCORE_REQUESTS)
        futs = [await producer.send(topic, SCORE_REQUESTS.encode(r), key=r.request_id.encode()) for r in requests]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def _assign_all(consumer: AIOKafkaConsumer, topic: str, from_beginning: bool) -> None:
    parts = None
    deadline = time.monotonic() + 30
    while not parts:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} has no partitions (does it exist?)")
        await consumer.topics()  # refreshes cluster metadata
        await asyncio.sleep(0.2)  # back off between metadata refreshes while the topic is being created
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    if from_beginning:
        await consumer.seek_to_beginning(*tps)
    else:
        await consumer.seek_to_end(*tps)
        # Resolve the lazy end positions now so messages published after this call are seen.
        for tp in tps:
            await consumer.position(tp)


class RankingWaiter:
    """Collect rankings for request ids from the results topic, deduplicated by request id."""

    def __init__(self, settings: CommonSettings, topic: str | None = None) -> None:
        self.settings = settings
        self.topic = topic or topic_name(settings, RANKINGS)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            client_id=f"{settings.client_id}-waiter",
            **client_security_kwargs(settings),
        )
        self.rankings: dict[str, Ranking] = {}
        self.duplicates = 0
        self._waiters: dict[str, asyncio.Future[Ranking]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self, from_beginning: bool = False) -> RankingWaiter:
        await self.consumer.start()
        await _assign_all(self.consumer, self.topic, from_beginning)
        self._task = asyncio.create_task(self._pump())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()

    async def __aenter__(self) -> RankingWaiter:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def _pump(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    r = RANKINGS.decode(rec.value)
                    if r.request_id in self.rankings:
                        self.duplicates += 1
                        continue
                    self.rankings[r.request_id] = r
                    fut = self._waiters.pop(r.request_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(r)

    async def wait(self, request_id: str, timeout: float) -> Ranking:
        if request_id in self.rankings:
            return self.rankings[request_id]
        fut = self._waiters.setdefault(request_id, asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(fut, timeout)

    async def wait_all(self, request_ids: Iterable[str], timeout: float) -> dict[str, Ranking]:
        ids = list(request_ids)
        async with asyncio.timeout(timeout):
            for rid in ids:
                await self.wait(rid, timeout)
        return {rid: self.rankings[rid] for rid in ids}


async def tail(
    settings: CommonSettings,
    spec: TopicSpec[Any],
    from_beginning: bool = False,
    limit: int | None = None,
    idle_exit_s: float | None = None,
) -> AsyncIterator[tuple[Any, Any]]:
    """Yield ``(record, decoded message or SchemaError)`` from every partition of a topic."""
    from schemas import SchemaError

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        client_id=f"{settings.client_id}-tail",
        **client_security_kwargs(settings),
    )
    await consumer.start()
    n = 0
    try:
        await _assign_all(consumer, topic_name(settings, spec), from_beginning)
        idle_since = time.monotonic()
        while limit is None or n < limit:
            batch = await consumer.getmany(timeout_ms=500)
            if not batch:
                if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    return
                continue
            idle_since = time.monotonic()
            for records in batch.values():
                for rec in records:
                    try:
                        yield rec, spec.decode(rec.value)
                    except SchemaError as e:
                        yield rec, e
                    n += 1
    finally:
        await consumer.stop()

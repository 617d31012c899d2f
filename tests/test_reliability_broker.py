"""Issue 18 finding 4: a broker that restarts empty never gets offsets committed for answers it dropped —
by the worker (rankings) or the summarizer (dead letters).

The embedded broker (tansu, memory-only) restarted empty still acknowledges writes to the topics it lost
and drops them. This test starts its own broker on a free port, holds requests inside the engine (a gate
around the real vLLM engine), restarts the broker, then lets the worker publish: the rankings are
acknowledged by a broker without the rankings topic, and the worker must stop without committing them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from client import new_request, publish_postings, publish_requests
from engine.corpus import postings
from jobscore.cache import SummaryCache
from jobscore.kafka import BrokerLost, make_producer
from jobscore.settings import SummarizerSettings, WorkerSettings
from jobscore.topics import ensure_topics
from ops.devstack import EmbeddedBroker
from summarizer.service import Summarizer
from summarizer.writer import build_records
from tests.conftest import WAIT_S, wait_until
from tests.helpers import GatedEngine, committed
from worker.loop import Worker

pytestmark = pytest.mark.engine


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker().start()
    try:
        yield b
    finally:
        b.stop()


async def test_broker_restarted_empty_worker_commits_nothing_it_answered_into_the_void(
    vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], own_broker: EmbeddedBroker
) -> None:
    ws = worker_settings(kafka_bootstrap=own_broker.bootstrap, kafka_send_attempts=2)
    await ensure_topics(ws)
    items = postings(3, seed=41, prefix=f"{ws.group_id}-job")
    cache = SummaryCache.from_url(ws.redis_url, ws.summarizer_version)
    await cache.write(build_records(items, ws.summarizer_version, 128))
    await cache.close()
    reqs = [new_request("baker", [p.job_id for p in items], request_id=f"{ws.group_id}-r{i}") for i in range(6)]
    engine = GatedEngine(vllm_engine)
    worker = Worker(ws, engine)  # type: ignore[arg-type]
    await worker.start()
    task = asyncio.create_task(worker.run())
    try:
        await publish_requests(ws, reqs)
        await wait_until(lambda: worker.offsets.in_flight() == len(reqs), what="all requests taken in")
        await asyncio.to_thread(engine.waiting.wait, WAIT_S)
        await asyncio.to_thread(own_broker.restart)  # empty: topics, offsets and groups are gone
        engine.gate.set()
        with pytest.raises(BrokerLost, match="no longer exists"):
            await asyncio.wait_for(task, WAIT_S)
    finally:
        engine.gate.set()
        await worker.close()
    # The answers were acknowledged (by a broker that dropped them) but nothing was committed for them.
    assert worker.requests_done >= 1
    assert all(v is None for v in (await committed(ws, ws.group_id, ws.topic_requests)).values())


class GatedSummarizer(Summarizer):
    """The real summarizer service, its batch write held until the test opens the gate."""

    def __init__(self, settings: SummarizerSettings) -> None:
        super().__init__(settings)
        self.gate = asyncio.Event()
        self.writing = asyncio.Event()

    async def _write(self, items: list[Any]) -> Any:
        self.writing.set()
        await self.gate.wait()
        return await super()._write(items)


async def test_broker_restarted_empty_summarizer_commits_nothing_after_dead_letters_into_the_void(
    summarizer_settings: Callable[..., SummarizerSettings], own_broker: EmbeddedBroker
) -> None:
    # A batch with a bad posting: its dead letter is sent, the batch's write held; the broker restarts empty
    # meanwhile, so the dead letter is acknowledged by a broker without the topic. No commit may follow.
    ss = summarizer_settings(kafka_bootstrap=own_broker.bootstrap)
    await ensure_topics(ss)
    good = postings(2, seed=43, prefix=f"{ss.group_id}-job")
    await publish_postings(ss, good)
    producer = make_producer(ss)
    await producer.start()
    try:
        await producer.send_and_wait(ss.topic_postings, b"\xff not a posting")
    finally:
        await producer.stop()
    svc = GatedSummarizer(ss)
    await svc.start()
    task = asyncio.create_task(svc.run())
    try:
        await asyncio.wait_for(svc.writing.wait(), WAIT_S)
        await asyncio.to_thread(own_broker.restart)  # empty: topics, offsets and groups are gone
        svc.gate.set()
        with pytest.raises(BrokerLost, match="no longer exists"):
            await asyncio.wait_for(task, WAIT_S)
    finally:
        svc.gate.set()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await svc.close()
    assert svc.postings_done == 0
    offsets = await committed(ss, ss.group_id, ss.topic_postings)
    assert all(v is None for v in offsets.values()), offsets

"""Issue 18 finding 4: a broker that restarts empty never gets offsets committed for answers it dropped.

The embedded broker (tansu, memory-only) restarted empty still acknowledges writes to the topics it lost
and drops them. This test starts its own broker on a free port, holds requests inside the engine (a gate
around the real vLLM engine), restarts the broker, then lets the worker publish: the rankings are
acknowledged by a broker without the results topic, and the worker must stop without committing them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from aiokafka import TopicPartition

from engine.corpus import postings
from jobscore.cache import SummaryCache
from jobscore.client import new_request, publish_requests
from jobscore.devstack import EmbeddedBroker
from jobscore.kafka import BrokerLost, ensure_topics, make_consumer
from jobscore.settings import WorkerSettings
from summarizer.writer import build_records
from tests.conftest import WAIT_S, wait_until
from worker.loop import Worker

pytestmark = pytest.mark.engine


class GatedEngine:
    """The real engine behind a gate: scoring waits until the test opens it (the worker is not mocked)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.info = engine.info
        self.max_model_len = engine.max_model_len
        self.tokenizer = engine.tokenizer
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def score_tokens(self, prompts: Sequence[Sequence[int]]) -> list[float]:
        self.waiting.set()
        assert self.gate.wait(WAIT_S), "the test never opened the gate"
        return list(self.engine.score_tokens(prompts))

    def score(self, prompts: Sequence[str]) -> list[float]:
        return list(self.engine.score(prompts))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return list(self.engine.count_tokens(texts))

    def close(self) -> None:
        pass


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker().start()
    try:
        yield b
    finally:
        b.stop()


async def committed(s: WorkerSettings) -> dict[int, int | None]:
    consumer = make_consumer(s, s.group_id)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(s.topic_requests, p)) for p in range(s.topic_partitions)}
    finally:
        await consumer.stop()


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
    assert all(v is None for v in (await committed(ws)).values())

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
import logging
from collections.abc import Callable
from typing import Any

import pytest

from app.commands import EXIT_BROKER_LOST, service_failed
from client import new_request, publish_postings, publish_requests
from engine.corpus import postings
from jobscore.cache import SummaryCache
from jobscore.health import HEALTH
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


async def test_idle_summarizer_notices_the_lost_topics_on_a_timer_and_stops_with_one_error_line(
    summarizer_settings: Callable[..., SummarizerSettings],
    own_broker: EmbeddedBroker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 30: the summarizer checked its topics only before a commit, so an idle one stayed ready for as long
    as no posting came while its topics did not exist. Now the shell checks on a timer; the service stops with
    `BrokerLost` (logging no ERROR itself) and the command turns that into one ERROR line and exit code 3."""
    ss = summarizer_settings(kafka_bootstrap=own_broker.bootstrap, health_probe_interval_s=0.5)
    svc = Summarizer(ss)
    caplog.set_level(logging.INFO)
    await svc.start()
    task = asyncio.create_task(svc.run())
    try:
        await wait_until(lambda: HEALTH.report()["checks"]["broker"]["ok"], what="the broker probed ready")
        own_broker.restart()  # same port, empty: the summarizer's topics are gone; no posting will come
        await wait_until(task.done, what="the idle summarizer to notice the lost topics")
    finally:
        svc.stop()
        with contextlib.suppress(BaseException):
            await task
        await svc.close()
    lost = task.exception()
    assert isinstance(lost, BrokerLost) and not HEALTH.report()["checks"]["broker"]["ok"]
    ours = ("jobscore", "summarizer", "worker", "app", "ops")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.split(".")[0] in ours]
    assert service_failed("summarizer", lost) == EXIT_BROKER_LOST
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.split(".")[0] in ours]
    assert len(errors) == 1 and errors[0].exc_info is None, "one ERROR line, no traceback"
    assert "exit 3" in errors[0].getMessage() and "no longer exists" in errors[0].getMessage()

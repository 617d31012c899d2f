"""Issue 18 finding 3: a Redis stall or restart never kills the worker or the summarizer.

Each test starts its own ``redis-server`` on a free port, stalls it (SIGSTOP/SIGCONT) and restarts it
(SIGTERM, then a new server on the same port), and syncs on state: the outage flag the cache raises
(``REDIS_OUTAGE``, the same that drives /readyz and ``jobscore_redis_errors_total``) and rankings or
summaries arriving. Requests published during the outage are answered after recovery, or with
``timeout`` once their deadline passes; the service task never exits.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest

from client import RankingWaiter, new_request, publish_postings, publish_requests
from engine.corpus import postings
from jobscore.cache import REDIS_OUTAGE, SummaryCache
from jobscore.health import HEALTH
from jobscore.settings import CommonSettings, SummarizerSettings, WorkerSettings
from schemas import ScoreRequest
from summarizer.service import Summarizer
from summarizer.writer import build_records
from tests.conftest import WAIT_S, RedisServer, wait_until
from tests.helpers import running
from worker.loop import Worker

# Short timeouts so an outage is noticed in about a second on this 2-core machine.
FAST_REDIS = {"redis_timeout_s": 1.0, "redis_retry_attempts": 2, "redis_retry_max_s": 0.2}


async def outage_seen() -> None:
    await wait_until(lambda: REDIS_OUTAGE.down, what="the cache to report Redis down")
    assert not HEALTH.ready() and not HEALTH.report()["checks"]["redis"]["ok"]  # type: ignore[index]


async def recovered() -> None:
    await wait_until(lambda: not REDIS_OUTAGE.down, what="the cache to report Redis back")


def _req(ws: WorkerSettings, ids: list[str], name: str, deadline_s: float | None = None) -> ScoreRequest:
    return new_request("forklift driver", ids, top_k=2, request_id=f"{ws.group_id}-{name}", deadline_s=deadline_s)


@pytest.mark.engine
async def test_worker_redis_stall_and_restart_requests_answered_task_survives(
    vllm_engine: Any,
    worker_settings: Callable[..., WorkerSettings],
    topics: CommonSettings,
    own_redis: RedisServer,
) -> None:
    ws = worker_settings(redis_url=own_redis.url, **FAST_REDIS)
    items = postings(3, seed=31, prefix=f"{ws.group_id}-job")
    ids = [p.job_id for p in items]

    async def seed() -> None:
        cache = SummaryCache.from_url(own_redis.url, ws.summarizer_version)
        await cache.write(build_records(items, ws.summarizer_version, 128))
        await cache.close()

    await seed()
    async with running(Worker(ws, vllm_engine), faults=True) as task, RankingWaiter(ws) as waiter:
        first = _req(ws, ids, "before")
        await publish_requests(ws, [first])
        assert (await waiter.wait(first.request_id, WAIT_S)).status == "ok"

        # 1. Stall: the MGET hangs until the socket timeout, then is retried while Redis stays stopped. A
        # request whose deadline passes meanwhile is answered "timeout"; one without waits for Redis.
        own_redis.freeze()
        hurried = _req(ws, ids, "stall-deadline", deadline_s=3.0)
        await publish_requests(ws, [hurried])
        await outage_seen()
        timed_out = await waiter.wait(hurried.request_id, WAIT_S)  # answered during the outage
        assert timed_out.status == "timeout" and "Redis" in timed_out.detail
        patient = _req(ws, ids, "stall")
        await publish_requests(ws, [patient])
        tries = REDIS_OUTAGE.failures
        await wait_until(lambda: REDIS_OUTAGE.failures >= tries + 2, what="the worker retrying the patient request")
        assert not task.done(), "the worker keeps running through a Redis stall"
        own_redis.thaw()
        assert (await waiter.wait(patient.request_id, WAIT_S)).status == "ok"
        await recovered()

        # 2. Restart: connections refused, then a fresh (empty) Redis on the same port.
        own_redis.stop()
        during = _req(ws, ids, "restart")
        await publish_requests(ws, [during])
        await outage_seen()
        own_redis.start()
        await seed()
        answered = await waiter.wait(during.request_id, WAIT_S)
        assert answered.status == "ok" and answered.candidates_total == 3
        await recovered()
        assert not task.done(), "the worker keeps running through a Redis restart"


async def test_summarizer_redis_stall_and_restart_postings_written_task_survives(
    summarizer_settings: Callable[..., SummarizerSettings], topics: CommonSettings, own_redis: RedisServer
) -> None:
    s = summarizer_settings(redis_url=own_redis.url, extractive_embeddings=False, **FAST_REDIS)
    cache = SummaryCache.from_url(own_redis.url, s.summarizer_version)

    async def all_written(ids: list[str]) -> bool:
        with contextlib.suppress(Exception):
            return all(r is not None for r in await cache.get_many(ids))
        return False

    try:
        async with running(Summarizer(s), faults=True) as task:
            wave1 = postings(5, seed=32, prefix=f"{s.group_id}-a")
            await publish_postings(s, wave1)
            await wait_until(lambda: all_written([p.job_id for p in wave1]), what="first wave summaries")

            own_redis.freeze()
            wave2 = postings(5, seed=33, prefix=f"{s.group_id}-b")
            await publish_postings(s, wave2)
            await outage_seen()
            assert not task.done(), "the summarizer keeps running through a Redis stall"
            own_redis.thaw()
            await wait_until(lambda: all_written([p.job_id for p in wave2]), what="summaries after the stall")

            own_redis.stop()
            t0 = time.monotonic()
            wave3 = postings(5, seed=34, prefix=f"{s.group_id}-c")
            await publish_postings(s, wave3)
            await outage_seen()
            own_redis.start()
            await wait_until(lambda: all_written([p.job_id for p in wave3]), what="summaries after the restart")
            assert time.monotonic() - t0 < WAIT_S
            assert not task.done(), "the summarizer keeps running through a Redis restart"
    finally:
        await cache.close()

"""Faults of the dependencies: Redis frozen (SIGSTOP/SIGCONT) and restarted, the broker restarted.

Redis: both services keep running through a stall and a restart (neither exits), go not-ready while Redis
is away, and answer / summarize everything once it is back. The redis-server is the scenario's own, on a
free port, with an append-only file so a restart keeps its data as a production Redis would.

Broker: on the embedded broker (tansu, memory-only) a restart loses every topic, group and offset, and it
acknowledges writes to the topics it lost and drops them. Full durability cannot be had there; what must
hold is the weaker property: the worker never commits a request whose answer went into the void (nothing
is committed on the restarted broker for work it was never shown), and it recovers for new requests.
With a real Kafka (``JOBSCORE_KAFKA_BOOTSTRAP``) and a command that restarts it
(``JOBSCORE_FAULT_KAFKA_RESTART_CMD``, e.g. ``docker restart kafka``), the full property is checked:
every request sent before, during and after the restart is answered.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from client import RankingWaiter, new_request, publish_postings, publish_requests
from engine.corpus import postings, queries
from jobscore.cache import SummaryCache
from jobscore.health import HEALTH
from jobscore.settings import SummarizerSettings, WorkerSettings
from jobscore.topics import ensure_topics
from ops.devstack import EmbeddedBroker, wait_for_port
from summarizer.service import Summarizer
from tests.conftest import WAIT_S, RedisServer, wait_until
from tests.faults.conftest import print_ledger, print_postings_ledger
from tests.helpers import committed, committed_offsets, next_offsets, running, seed
from worker.loop import Worker

# The suite collects tests/faults/ first, so its first test also pays the shared engine's load (~2-3 min on a
# busy 2-core host): a per-test bound above the default 300 s, still a bound.
pytestmark = [pytest.mark.engine, pytest.mark.faults, pytest.mark.timeout(600)]

# Redis timeouts short enough that a stall is noticed in about a second.
FAST_REDIS: dict[str, Any] = {
    "redis_timeout_s": 1.0,
    "redis_retry_attempts": 2,
    "redis_retry_max_s": 0.5,
    "health_probe_interval_s": 0.5,
}


def _redis_errors(op: str) -> float:
    return REGISTRY.get_sample_value("jobscore_redis_errors_total", {"op": op}) or 0.0


def _check_ok(name: str) -> bool | None:
    check = HEALTH.report()["checks"].get(name)  # type: ignore[union-attr]
    return None if check is None else bool(check["ok"])


async def _all_summarized(s: SummarizerSettings, ids: list[str]) -> bool:
    cache = SummaryCache.from_url(s.redis_url, s.summarizer_version)
    try:
        return all(r is not None for r in await cache.get_many(ids))
    finally:
        await cache.close()


class TestRedis:
    async def test_redis_stall_and_restart_services_stay_up_nothing_lost(
        self,
        vllm_engine: Any,
        worker_settings: Callable[..., WorkerSettings],
        summarizer_settings: Callable[..., SummarizerSettings],
        own_redis: RedisServer,
    ) -> None:
        own_redis.persistent = True
        own_redis.restart()  # now with its append-only file
        ws = worker_settings(redis_url=own_redis.url, **FAST_REDIS)
        ss = summarizer_settings(redis_url=own_redis.url, extractive_embeddings=False, **FAST_REDIS)
        await ensure_topics(ws)
        run = ws.group_id
        waves = {
            name: [new_request(q, [], request_id=f"{run}-{name}{i}") for i, q in enumerate(queries(8, seed=n))]
            for n, name in enumerate(("before", "stalled", "restarted"))
        }
        posts = {name: postings(6, seed=60 + n, prefix=f"{run}-{name}-job") for n, name in enumerate(waves)}
        for name in waves:  # each wave asks about its own postings and the first wave's
            cands = [p.job_id for p in posts[name] + posts["before"]]
            waves[name] = [new_request(r.query, cands, top_k=3, request_id=r.request_id) for r in waves[name]]

        async with (
            RankingWaiter(ws) as waiter,
            running(Summarizer(ss), faults=True) as summarizer,
            running(Worker(ws, vllm_engine), faults=True) as worker,
        ):

            async def wave(name: str) -> None:
                await publish_postings(ss, posts[name])
                await publish_requests(ws, waves[name])

            await wave("before")
            await waiter.wait_all([r.request_id for r in waves["before"]], WAIT_S)

            own_redis.freeze()
            # Requests first: the stall must outlast the worker's whole retry round (it then keeps waiting,
            # not ready) — sync on its failed MGET tries, counted per operation.
            tries0 = _redis_errors("get_many")
            await publish_requests(ws, waves["stalled"])
            await wait_until(
                lambda: worker.done() or _redis_errors("get_many") > tries0 + 2 * ws.redis_retry_attempts,
                what="the worker to exhaust a round of Redis retries and start another",
            )
            assert not worker.done(), f"the worker exited over a Redis stall: {worker.exception()!r}"
            assert _check_ok("redis") is False
            await publish_postings(ss, posts["stalled"])
            own_redis.thaw()
            await wait_until(lambda: _check_ok("redis") is True, what="ready again after the stall")
            await waiter.wait_all([r.request_id for r in waves["stalled"]], WAIT_S)

            own_redis.stop(graceful=True)
            await wave("restarted")
            await wait_until(lambda: _check_ok("redis") is False, what="not ready: redis (down)")
            own_redis.start()
            await waiter.wait_all([r.request_id for r in waves["restarted"]], WAIT_S)
            ids = [p.job_id for ps in posts.values() for p in ps]
            await wait_until(lambda: _all_summarized(ss, ids), what="every posting summarized")
            assert not worker.done(), f"the worker exited over Redis: {worker.exception()!r}"
            assert not summarizer.done(), f"the summarizer exited over Redis: {summarizer.exception()!r}"

        led = await print_ledger(ws, "Redis frozen (SIGSTOP/SIGCONT), then restarted")
        sent = sum(len(w) for w in waves.values())
        assert led.lost == 0 and led.answered == sent
        pled = await print_postings_ledger(ss, ss.summarizer_version, "Redis frozen, then restarted")
        assert pled.lost == 0 and pled.summarized == len(ids)


_TOPIC_FIELDS = ("topic_postings", "topic_requests", "topic_requests_bulk", "topic_rankings", "topic_dead_letters")


class TestBrokerRestart:
    async def test_embedded_broker_restart_nothing_committed_into_the_void_then_recovers(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], own_broker: EmbeddedBroker
    ) -> None:
        ws = worker_settings(kafka_bootstrap=own_broker.bootstrap, max_records=2, max_batch_items=8)
        items = postings(6, seed=70, prefix=f"{ws.group_id}-job")
        await seed(ws, items)
        ids = [p.job_id for p in items]
        before = [new_request(q, ids, top_k=2, request_id=f"{ws.group_id}-b{i}") for i, q in enumerate(queries(40))]
        await ensure_topics(ws)
        async with RankingWaiter(ws) as waiter:
            await publish_requests(ws, before)
            worker = Worker(ws, vllm_engine)
            async with running(worker, faults=True) as task:
                await wait_until(lambda: worker.requests_done >= 5, what="answers before the restart")
                answered_before = worker.requests_done
                own_broker.restart()  # same port, empty: topics, groups and offsets are gone
                await wait_until(
                    lambda: task.done() or _check_ok("broker") is False, what="the worker to notice the lost broker"
                )
            # Stopped (drained or failed): nothing more can be committed from here on.
            answered_total = worker.requests_done
        on_restarted = await committed(ws, ws.group_id, ws.topic_requests)
        print(
            f"\nbroker restart: {answered_before} answered before it, {answered_total} by the worker in all; "
            f"worker {'exited: ' + repr(task.exception()) if task.done() and task.exception() else 'stopped'}; "
            f"committed on the restarted broker: {on_restarted}"
        )
        # The restarted broker never saw an answer: any offset committed there was committed into the void.
        assert all(v is None for v in on_restarted.values()), on_restarted

        # Recovery: a worker on the restarted broker answers new requests; their ledger balances. On topics
        # of their own: the rankings the old worker wrote between the restart and noticing it were acked into
        # the topic tansu had lost and reappear at offset 0 once the topic is created again. On that re-created
        # topic, about one clean-clone run in six lost one new ranking: the waiter had read it live, the
        # ledger's re-read (record by record, to the fetch high watermark) did not find it. We suspect tansu's
        # memory storage mixing the ghost and new batches (not proven); real Kafka keeps its topics across a
        # restart (the test below), so the recovery is checked where no ghosts can be.
        wa = worker_settings(
            kafka_bootstrap=own_broker.bootstrap,
            max_records=2,
            max_batch_items=8,
            **{t: f"{getattr(ws, t)}.after" for t in _TOPIC_FIELDS},
        )
        after = [new_request(q, ids, top_k=2, request_id=f"{ws.group_id}-a{i}") for i, q in enumerate(queries(12))]
        await ensure_topics(wa)
        async with RankingWaiter(wa) as waiter, running(Worker(wa, vllm_engine), faults=True):
            await publish_requests(wa, after)
            await waiter.wait_all([r.request_id for r in after], WAIT_S)
        led = await print_ledger(wa, "embedded broker restart (requests sent after it; tansu lost the ones before)")
        assert led.lost == 0 and led.sent == len(after) and led.answered == len(after)
        assert await committed_offsets(wa) == await next_offsets(wa, len(after))

    @pytest.mark.skipif(
        not (os.environ.get("JOBSCORE_KAFKA_BOOTSTRAP") and os.environ.get("JOBSCORE_FAULT_KAFKA_RESTART_CMD")),
        reason="full durability needs a real Kafka (JOBSCORE_KAFKA_BOOTSTRAP) and a way to restart it "
        "(JOBSCORE_FAULT_KAFKA_RESTART_CMD); the embedded broker is memory-only",
    )
    async def test_real_kafka_restart_every_request_answered(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings]
    ) -> None:
        bootstrap = os.environ["JOBSCORE_KAFKA_BOOTSTRAP"]
        run = uuid.uuid4().hex[:8]
        ws = worker_settings(kafka_bootstrap=bootstrap, max_records=2, max_batch_items=8)
        items = postings(6, seed=71, prefix=f"{run}-job")
        await seed(ws, items)
        ids = [p.job_id for p in items]
        reqs = [new_request(q, ids, top_k=2, request_id=f"{run}-r{i}") for i, q in enumerate(queries(60))]
        await ensure_topics(ws)
        host, port = bootstrap.split(",")[0].rsplit(":", 1)
        async with RankingWaiter(ws) as waiter:
            await publish_requests(ws, reqs[:40])
            worker = Worker(ws, vllm_engine)
            async with running(worker, faults=True) as task:
                await wait_until(lambda: worker.requests_done >= 5, what="answers before the restart")
                await asyncio.to_thread(
                    subprocess.run, os.environ["JOBSCORE_FAULT_KAFKA_RESTART_CMD"], shell=True, check=True
                )
                await asyncio.to_thread(wait_for_port, host, int(port), 120.0)
                await publish_requests(ws, reqs[40:])
                await wait_until(
                    lambda: task.done() or all(r.request_id in waiter.rankings for r in reqs),
                    timeout=4 * WAIT_S,
                    what="answers after the restart",
                )
            if task.done() and task.exception() is not None:  # it may exit; its replacement finishes
                async with running(Worker(ws, vllm_engine), faults=True):
                    await waiter.wait_all([r.request_id for r in reqs], 4 * WAIT_S)
        led = await print_ledger(ws, "real Kafka restarted mid-stream")
        assert led.lost == 0 and led.answered == len(reqs)

"""Faults of the workers themselves: a worker process SIGKILLed mid-batch, and a rebalance under load whose
drain outlasts the session timeout. Each ends with the ledger: every request answered, none lost."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import psutil
import pytest
from aiokafka import TopicPartition

from client import RankingWaiter, new_request, publish_requests
from engine.corpus import postings, queries
from jobscore.settings import CommonSettings, WorkerSettings
from ops.devstack import free_port
from tests.conftest import SESSION_TIMEOUT_MS, WAIT_S, queued_items, wait_until
from tests.faults.conftest import PROCESS_START_S, DelegatingEngine, WorkerProcess, print_ledger
from tests.helpers import committed_ids, committed_offsets, next_offsets, request_positions, running, seed
from worker.loop import Worker

# The suite collects tests/faults/ first, so its first test also pays the shared engine's load (~2-3 min on a
# busy 2-core host): a per-test bound above the default 300 s, still a bound.
pytestmark = [pytest.mark.engine, pytest.mark.faults, pytest.mark.timeout(600)]

# How long the killed worker's engine processes may outlive it (they must die with their parent).
ORPHAN_GRACE_S = 30.0
# Rebalance: pairs queued on the first worker when the second joins, and its engine's extra time per batch.
DEEP_QUEUE = 200
SLOW_BATCH_S = 0.3


class TestWorkerKilled:
    async def test_sigkill_mid_batch_second_worker_answers_everything(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        # Small polls and batches: the kill lands with requests queued, in the engine and being published.
        port = free_port()  # its metrics: the test sees the worker's queue there
        ws = worker_settings(max_records=2, max_batch_items=8, max_queued_items=16, metrics_port=port)
        items = postings(6, seed=43, prefix=f"{ws.group_id}-job")
        await seed(ws, items)
        reqs = [
            new_request(q, [p.job_id for p in items], top_k=2, request_id=f"{ws.group_id}-k{i}")
            for i, q in enumerate(queries(60, seed=43))
        ]
        proc = WorkerProcess.start(ws)
        try:
            async with RankingWaiter(ws) as waiter:
                await publish_requests(ws, reqs[:10])
                await wait_until(
                    lambda: len(waiter.rankings) >= 5 or proc.proc.poll() is not None,
                    timeout=PROCESS_START_S,
                    what="the worker process to answer",
                )
                assert proc.proc.poll() is None, proc.output()[-3000:]
                children = proc.descendants()
                # Mid-stream on any host: freeze its vLLM engine processes, then publish the rest — the worker
                # takes them in but cannot answer them before the kill (a fast engine could finish them all
                # between the waiter's 5th ranking and the kill). SIGKILL ends stopped processes too.
                engines = [c for c in children if "VLLM" in c.name()]
                assert engines, "the worker process started no vLLM engine process"
                for c in engines:
                    c.suspend()
                await publish_requests(ws, reqs[10:])
                await wait_until(
                    lambda: queued_items(port) > 0, what="the worker to take in work its frozen engine cannot score"
                )
                proc.proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(proc.proc.wait, WAIT_S)
                by_killed = len(waiter.rankings)
                committed = await committed_offsets(ws)
                # What it committed it had answered: a kill never loses a committed request. Each committed
                # request's ranking is on the rankings topic; the waiter may still be reading the last of them
                # (it counted 11 while 12 were committed and published), so wait for exactly those ids.
                covered = committed_ids(await request_positions(ws, len(reqs)), committed)
                assert len(covered) == sum(v or 0 for v in committed.values())
                assert len(covered) < len(reqs), "the kill must land mid-stream (make the stream longer)"
                await wait_until(
                    lambda: covered <= waiter.rankings.keys(),
                    timeout=WAIT_S,
                    what="a ranking for every request the killed worker committed",
                )
                async with running(Worker(ws, vllm_engine), faults=True):
                    await waiter.wait_all([r.request_id for r in reqs], WAIT_S)
                duplicates = waiter.duplicates
            led = await print_ledger(ws, f"SIGKILL of a worker process after {by_killed} of {len(reqs)} answers")
            assert led.lost == 0 and led.sent == len(reqs) and led.answered == len(reqs)
            assert led.duplicates == duplicates
            assert await committed_offsets(ws) == await next_offsets(ws, len(reqs))
            # Finding 6: the killed worker's vLLM engine processes must not outlive it (3 GB each).
            _, alive = await asyncio.to_thread(psutil.wait_procs, children, ORPHAN_GRACE_S)
            assert not alive, f"engine processes outlived the killed worker: {[p.pid for p in alive]}"
        finally:
            proc.kill_all()


class _TimedRevoke(Worker):
    """The worker, with the duration of each revoke drain recorded (instrumentation, no behaviour change)."""

    revokes: list[float]

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        t0 = time.monotonic()
        queued = len(self.batcher)
        await super()._on_revoked(revoked)
        if revoked:
            self.revokes.append(time.monotonic() - t0)
            self.queued_at_revoke = queued


class TestRebalance:
    async def test_rebalance_under_load_drain_longer_than_session_timeout_loses_nothing(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        # A deep queue and a drain budget well past the session timeout: when the second worker joins, the
        # first drains its revoked partitions for longer than a session lasts. The member must stay in the
        # group through it (rebalance timeout >= drain), and what it drained must be committed once.
        session_s = SESSION_TIMEOUT_MS / 1e3
        ws = worker_settings(max_records=8, max_batch_items=8, max_queued_items=256, drain_timeout_s=10 * session_s)
        items = postings(12, seed=44, prefix=f"{ws.group_id}-job")
        await seed(ws, items)
        reqs = [
            new_request(q, [p.job_id for p in items], top_k=3, request_id=f"{ws.group_id}-rb{i}")
            for i, q in enumerate(queries(80, seed=44))
        ]
        # The first worker's engine is slowed per batch (8 pairs), so its drain of the >= 200 queued pairs
        # outlasts the session timeout on any host (>= 25 batches x 0.3 s), not only on a busy 2-core one;
        # backpressure (256 queued pairs) keeps it well inside the drain budget on a slow one.
        first = _TimedRevoke(ws, DelegatingEngine(vllm_engine, lambda prompts: time.sleep(SLOW_BATCH_S)))
        first.revokes = []
        async with RankingWaiter(ws) as waiter, running(first, faults=True) as first_task:
            await wait_until(lambda: first.consumer is not None and first.consumer.assignment(), what="assignment")
            await publish_requests(ws, reqs)
            # Load is queued (hundreds of pairs) before the second member arrives and forces the rebalance.
            await wait_until(lambda: len(first.batcher) >= DEEP_QUEUE, what="a deep queue on the first worker")
            second = Worker(ws, vllm_engine)
            async with running(second, faults=True) as second_task:
                await waiter.wait_all([r.request_id for r in reqs], 4 * WAIT_S)
                assert not first_task.done() and not second_task.done()
        led = await print_ledger(
            ws,
            f"rebalance under load (revoke drains {', '.join(f'{d:.1f}s' for d in first.revokes)}; "
            f"session timeout {session_s:.0f}s)",
        )
        assert led.lost == 0 and led.answered == len(reqs)
        assert first.revokes, "the second worker's join must revoke partitions from the first"
        assert max(first.revokes) > session_s, f"the drain ({first.revokes}) must outlast the session timeout"
        assert max(first.revokes) < ws.drain_timeout_s, "the drain must finish, not be cut at its timeout"
        # It stayed a member through its drain and committed what it drained: the next owner redid nothing.
        assert led.duplicates == 0
        assert await committed_offsets(ws) == await next_offsets(ws, len(reqs))

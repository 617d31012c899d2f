"""Fault: the engine fails mid-batch. Two kinds, told apart by the worker:

- a *poison prompt*: the engine rejects one prompt, every time, and scores the others. The worker isolates it
  (retrying its batch's prompts singly) and answers the request with that candidate as ``engine_error`` —
  also when the poison prompt is alone in its batch (a one-candidate request), where a single failing call
  looks like a lost device: the worker must not exit and crash-loop on it;
- a *lost device*: every call fails from some point on. The worker stops scoring, goes not-ready, commits
  nothing it has not answered and exits; a second worker with a healthy engine answers the rest.

The engine is the real vLLM engine on the tiny model with the fault injected in front of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from client import RankingWaiter, new_request, publish_requests
from engine.corpus import postings, queries
from jobscore.health import HEALTH
from jobscore.settings import CommonSettings, WorkerSettings
from schemas import JobPosted
from summarizer.writer import build_records
from tests.conftest import WAIT_S, wait_until
from tests.faults.conftest import DelegatingEngine, print_ledger
from tests.helpers import committed_ids, committed_offsets, next_offsets, request_positions, running, seed
from worker.loop import Worker

# The suite collects tests/faults/ first, so its first test also pays the shared engine's load (~2-3 min on a
# busy 2-core host): a per-test bound above the default 300 s, still a bound.
pytestmark = [pytest.mark.engine, pytest.mark.faults, pytest.mark.timeout(600)]

MARKER = "Zyzzogeton"  # a word in one posting: a prompt holding its tokens is the poison prompt


def _contains(seq: Sequence[int], sub: Sequence[int]) -> bool:
    n = len(sub)
    return any(list(seq[i : i + n]) == list(sub) for i in range(len(seq) - n + 1))


class TestEngineFailure:
    async def test_poison_prompt_isolated_request_answered_worker_keeps_running(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        ws = worker_settings(max_batch_items=8)
        items = postings(5, seed=51, prefix=f"{ws.group_id}-job")
        bad = JobPosted(job_id=f"{ws.group_id}-poison", title=f"{MARKER} {MARKER}", description=f"{MARKER} " * 20)
        await seed(ws, [*items, bad])
        # The prompt holds the summary's token ids as tokenized on their own: a run from its middle marks it.
        summary = build_records([bad], ws.summarizer_version, 128)[0].summary
        sids = vllm_engine.tokenizer(summary, add_special_tokens=False)["input_ids"]
        marker_ids = sids[len(sids) // 2 : len(sids) // 2 + 4]

        def reject_marker(prompts: Sequence[Sequence[int]]) -> None:
            if any(_contains(p, marker_ids) for p in prompts):
                raise RuntimeError("CUDA error: an illegal memory access was encountered (this prompt only)")

        engine = DelegatingEngine(vllm_engine, reject_marker)
        ids = [p.job_id for p in items]
        mixed = new_request("welder", [*ids, bad.job_id], top_k=10, request_id=f"{ws.group_id}-mixed")
        alone = new_request("welder", [bad.job_id], top_k=1, request_id=f"{ws.group_id}-alone")
        after = [new_request(q, ids, top_k=2, request_id=f"{ws.group_id}-ok{i}") for i, q in enumerate(queries(5))]
        reqs = [mixed, alone, *after]
        async with RankingWaiter(ws) as waiter, running(Worker(ws, engine), faults=True) as task:
            # First the one-candidate request on its own: its poison prompt is the whole batch.
            await publish_requests(ws, [alone])
            await wait_until(lambda: task.done() or alone.request_id in waiter.rankings, what="the lone request")
            assert not task.done(), f"the worker exited on a poison prompt alone in its batch: {task.exception()!r}"
            await publish_requests(ws, [mixed, *after])
            await wait_until(
                lambda: task.done() or all(r.request_id in waiter.rankings for r in reqs),
                what="every request answered",
            )
            assert not task.done(), f"the worker exited on one poison prompt: {task.exception()!r}"
        led = await print_ledger(ws, "a poison prompt (alone in its batch and mixed with good ones)")
        assert led.lost == 0 and led.answered == len(reqs)
        for r in (mixed, alone):
            errs = {(e.job_id, e.reason) for e in waiter.rankings[r.request_id].errors}
            assert (bad.job_id, "engine_error") in errs
        assert {j.job_id for j in waiter.rankings[mixed.request_id].results} == set(ids)

    async def test_device_lost_mid_batch_not_ready_no_commit_second_worker_answers(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        ws = worker_settings(max_records=4, max_batch_items=8, max_queued_items=64)
        items = postings(6, seed=52, prefix=f"{ws.group_id}-job")
        await seed(ws, items)
        reqs = [
            new_request(q, [p.job_id for p in items], top_k=2, request_id=f"{ws.group_id}-d{i}")
            for i, q in enumerate(queries(40, seed=52))
        ]
        good_calls = 6

        def lose_device_after_some_calls(prompts: Sequence[Sequence[int]]) -> None:
            if engine.calls > good_calls:
                raise RuntimeError("CUDA error: device-side assert triggered (device lost)")

        engine = DelegatingEngine(vllm_engine, lose_device_after_some_calls)
        async with RankingWaiter(ws) as waiter:
            await publish_requests(ws, reqs)
            failing = Worker(ws, engine)
            async with running(failing, faults=True) as task:
                await wait_until(task.done, what="the worker with a lost device to stop")
                ready_while_failed = HEALTH.ready()
                engine_check = HEALTH.report()["checks"].get("engine", {})  # type: ignore[union-attr]
            committed = await committed_offsets(ws)
            by_failed = len(waiter.rankings)
            # Bounded: a lost device is given up on after a few calls, not retried forever.
            assert engine.calls <= good_calls + 1 + ws.max_batch_items + 4, engine.calls
            assert task.exception() is not None, "a lost device must stop the worker (the supervisor restarts it)"
            assert not ready_while_failed and engine_check.get("ok") is False, HEALTH.report()
            # What it committed it had answered: each committed request's ranking is on the rankings topic. The
            # waiter may not have fetched the last of them when the worker dies a moment after publishing (it
            # once had 0 of 4 committed), so wait for exactly those ids rather than compare counts.
            covered = committed_ids(await request_positions(ws, len(reqs)), committed)
            assert len(covered) == sum(v or 0 for v in committed.values())
            await wait_until(
                lambda: covered <= waiter.rankings.keys(),
                what="a ranking for every request the failed worker committed",
            )
            async with running(Worker(ws, vllm_engine), faults=True):
                await waiter.wait_all([r.request_id for r in reqs], WAIT_S)
        led = await print_ledger(ws, f"engine lost after {good_calls} calls ({by_failed} answered before)")
        assert led.lost == 0 and led.answered == len(reqs)
        assert await committed_offsets(ws) == await next_offsets(ws, len(reqs))

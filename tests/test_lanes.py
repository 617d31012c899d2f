"""Priority lanes: online requests (requests topic) before bulk ones (requests.bulk) — in the batcher, and in
a real worker on the tiny model with the bulk lane saturated."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from client import RankingWaiter, ScoringClient, new_request
from engine.corpus import postings, queries
from jobscore.settings import CommonSettings, WorkerSettings
from schemas import ScoreRequest
from tests.conftest import WAIT_S, wait_until
from tests.helpers import GatedEngine, running, seed
from worker.batching import Lane, RecordKey, RequestState, TokenBudgetBatcher, WorkItem
from worker.loop import Worker


def state(n: int, rid: str, lane: Lane) -> RequestState:
    req = ScoreRequest(request_id=rid, query="q", candidates=[f"j{i}" for i in range(n)])
    st = RequestState(req, RecordKey("t", 0, 0), time.time(), lane=lane)
    st.job_ids = [f"j{i}" for i in range(n)]
    st.scores = [None] * n
    st.remaining = n
    return st


def items(st: RequestState, tokens: int = 10) -> list[WorkItem]:
    now = time.monotonic()
    return [WorkItem(st, i, list(range(tokens)), now) for i in range(len(st.job_ids))]


async def test_batch_fills_from_online_first_bulk_takes_the_rest() -> None:
    b = TokenBudgetBatcher(max_batch_tokens=10_000, max_batch_items=4, max_wait_s=0.0)
    bulk = state(10, "bulk", "bulk")
    online = state(3, "online", "online")
    b.put(items(bulk))
    b.put(items(online))  # arrives after the bulk backlog
    assert b.queued("bulk") == 10 and b.queued("online") == 3
    first = await b.next_batch()
    assert [it.state.lane for it in first] == ["online"] * 3 + ["bulk"]
    assert [it.state.lane for it in await b.next_batch()] == ["bulk"] * 4


async def test_online_item_over_the_leftover_budget_keeps_bulk_out() -> None:
    # Online work that does not fit this batch goes first in the next; bulk may not take its place.
    b = TokenBudgetBatcher(max_batch_tokens=100, max_batch_items=100, max_wait_s=0.0)
    b.put(items(state(5, "bulk", "bulk"), tokens=10))
    b.put(items(state(2, "online", "online"), tokens=60))
    assert [it.state.lane for it in await b.next_batch()] == ["online"]
    assert [it.state.lane for it in await b.next_batch()] == ["online"] + ["bulk"] * 4


class _RecordingBatcher(TokenBudgetBatcher):
    """The real batcher, recording the lanes of every batch it cuts and when online work was queued."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.cuts: list[list[Lane]] = []
        self.online_put_at_cut: list[int] = []  # index of the next cut when online items were queued
        self.bulk_queued_at_online_put: list[int] = []

    def put(self, batch: Sequence[WorkItem]) -> None:
        if any(it.state.lane == "online" for it in batch):
            self.online_put_at_cut.append(len(self.cuts))
            self.bulk_queued_at_online_put.append(self.queued("bulk"))
        super().put(batch)

    def _cut(self, lanes: Sequence[Lane] = ("online", "bulk"), mix_lanes: bool = True) -> list[WorkItem]:
        out = super()._cut(lanes, mix_lanes)
        self.cuts.append([it.state.lane for it in out])
        return out


@pytest.mark.engine
async def test_bulk_lane_saturated_online_request_scored_in_next_batch(
    vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
) -> None:
    ws = worker_settings(max_batch_items=8, max_queued_items=64, max_wait_ms=1.0)
    jobs = postings(8, seed=31, prefix=f"{ws.group_id}-job")
    await seed(ws, jobs)
    ids = [p.job_id for p in jobs]
    # The engine held on its first (bulk) batch: the worker is busy with bulk and a bulk backlog is queued when
    # the online request arrives — the saturated state, made certain rather than raced for.
    engine = GatedEngine(vllm_engine)
    worker = Worker(ws, engine)
    batcher = _RecordingBatcher(ws.max_batch_tokens, ws.max_batch_items, ws.max_wait_ms / 1e3)
    worker.batcher = batcher
    bulk = [new_request(q, ids, top_k=3) for q in queries(80, seed=31)]
    async with (
        running(worker),
        RankingWaiter(ws) as seen,
        ScoringClient(ws, lane="bulk") as backfill,
        ScoringClient(ws) as online,
    ):
        await asyncio.gather(*(backfill.submit(r) for r in bulk))
        await wait_until(engine.waiting.is_set, what="the worker to score its first bulk batch")
        await wait_until(lambda: batcher.queued("bulk") > 0, what="a bulk backlog queued behind it")
        pending = asyncio.ensure_future(online.score("registered nurse", ids, top_k=3, timeout=WAIT_S))
        await wait_until(lambda: batcher.queued("online") == len(ids), what="the online request queued")
        assert batcher.bulk_queued_at_online_put[0] > 0
        engine.gate.set()
        ranking = await pending
        bulk_done_then = sum(r.request_id in seen.rankings for r in bulk)
        assert ranking.status == "ok" and len(ranking.results) == 3
        # Bulk still uses the engine: every bulk request is answered too.
        rankings = [await backfill.result(r.request_id, WAIT_S) for r in bulk]
    assert all(r.status == "ok" for r in rankings)
    assert bulk_done_then < len(bulk), "the online request must not wait for the bulk backlog"
    # The online request's 8 pairs were queued while bulk work was queued, and the very next batch held them.
    (at,) = batcher.online_put_at_cut
    assert batcher.cuts[at] == ["online"] * 8, batcher.cuts[at - 1 : at + 2]


async def test_bulk_share_of_a_batch_is_capped() -> None:
    # A batch is not preemptible: the bulk share bounds how long online work can wait behind one.
    b = TokenBudgetBatcher(max_batch_tokens=10_000, max_batch_items=8, max_wait_s=0.0, max_bulk_items=3)
    b.put(items(state(10, "bulk", "bulk")))
    assert [it.state.lane for it in await b.next_batch()] == ["bulk"] * 3
    b.put(items(state(2, "online", "online")))
    assert [it.state.lane for it in await b.next_batch()] == ["online"] * 2 + ["bulk"] * 3

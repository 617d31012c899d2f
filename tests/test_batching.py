"""Token-budget batching and contiguous offset commits: pure logic, property-tested."""

from __future__ import annotations

import asyncio
import time

from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import ScoreRequest
from worker.batching import RecordKey, RequestState, TokenBudgetBatcher, WorkItem
from worker.offsets import OffsetTracker

TP = TopicPartition("t", 0)


def make_state(n_items: int, rid: str, deadline: float | None = None) -> RequestState:
    req = ScoreRequest(
        request_id=rid, query="q", candidates=[f"j{i}" for i in range(max(1, n_items))], deadline=deadline
    )
    s = RequestState(req, RecordKey("t", 0, 0), time.time())
    s.job_ids = [f"j{i}" for i in range(n_items)]
    s.scores = [None] * n_items
    s.remaining = n_items
    return s


def items_for(state: RequestState, lengths: list[int]) -> list[WorkItem]:
    now = time.monotonic()
    return [WorkItem(state, i, list(range(n)), now) for i, n in enumerate(lengths)]


async def drain(batcher: TokenBudgetBatcher) -> list[list[WorkItem]]:
    batcher.close()
    out = []
    while batch := await batcher.next_batch():
        out.append(batch)
    return out


class TestTokenBudgetBatcher:
    @settings(max_examples=60, deadline=None)
    @given(
        requests=st.lists(st.lists(st.integers(1, 300), min_size=1, max_size=40), min_size=1, max_size=12),
        budget=st.integers(64, 2048),
        cap=st.integers(1, 64),
    )
    def test_batches_split_and_join_requests_exactly(self, requests: list[list[int]], budget: int, cap: int) -> None:
        async def scenario() -> None:
            b = TokenBudgetBatcher(budget, cap, max_wait_s=10.0)
            states = [make_state(len(lens), f"r{i}") for i, lens in enumerate(requests)]
            for s, lens in zip(states, requests, strict=True):
                b.put(items_for(s, lens))
            batches = await drain(b)
            seen: list[tuple[int, int]] = []
            for batch in batches:
                tokens = sum(len(it.tokens) for it in batch)
                # Budget and cap hold, except that a single over-budget prompt still gets its own batch.
                assert len(batch) <= cap
                assert tokens <= budget or len(batch) == 1
                for it in batch:
                    done = it.state.finish_item(it.index, float(len(it.tokens)) / 1000)
                    seen.append((id(it.state), it.index))
                    assert done == (it.state.remaining == 0)
            # Every item is scored exactly once, in arrival order, and results land at their index.
            expected = [(id(s), i) for s, lens in zip(states, requests, strict=True) for i in range(len(lens))]
            assert seen == expected
            for s, lens in zip(states, requests, strict=True):
                assert s.remaining == 0
                assert s.scores == [n / 1000 for n in lens]

        asyncio.run(scenario())

    async def test_small_request_is_not_held_back_beyond_max_wait(self) -> None:
        b = TokenBudgetBatcher(max_batch_tokens=10_000, max_batch_items=1000, max_wait_s=0.05)
        s = make_state(2, "r")
        b.put(items_for(s, [10, 10]))
        t0 = time.monotonic()
        batch = await asyncio.wait_for(b.next_batch(), 5)
        waited = time.monotonic() - t0
        assert len(batch) == 2
        assert 0.04 <= waited < 2.0

    async def test_full_budget_is_cut_without_waiting(self) -> None:
        b = TokenBudgetBatcher(max_batch_tokens=100, max_batch_items=1000, max_wait_s=60)
        s = make_state(5, "r")
        b.put(items_for(s, [40, 40, 40, 40, 40]))
        batch = await asyncio.wait_for(b.next_batch(), 5)
        assert [len(it.tokens) for it in batch] == [40, 40]  # the third would exceed 100
        assert len(b) == 3 and b.queued_tokens == 120

    async def test_expired_request_is_dropped_not_scored(self) -> None:
        b = TokenBudgetBatcher(max_batch_tokens=1000, max_batch_items=100, max_wait_s=0)
        late = make_state(3, "late", deadline=time.time() - 1)
        ok = make_state(1, "ok")
        b.put(items_for(late, [5, 5, 5]) + items_for(ok, [5]))
        batch = await b.next_batch()
        assert [it.state.req.request_id for it in batch] == ["ok"]
        assert b.take_finished() == [late] and late.timed_out and late.remaining == 0

    async def test_drop_removes_revoked_work(self) -> None:
        b = TokenBudgetBatcher(max_batch_tokens=1000, max_batch_items=100, max_wait_s=60)
        a, c = make_state(2, "a"), make_state(2, "c")
        b.put(items_for(a, [5, 5]) + items_for(c, [7, 7]))
        assert b.drop(lambda s: s is a) == [a]
        assert len(b) == 2 and b.queued_tokens == 14


class TestOffsetTracker:
    @settings(max_examples=100, deadline=None)
    @given(st.permutations(list(range(30))), st.integers(0, 30))
    def test_commit_never_passes_an_unanswered_record(self, order: list[int], answered: int) -> None:
        t = OffsetTracker()
        for off in range(30):
            t.add(TP, 100 + off)
        committed = None
        done: set[int] = set()
        for off in order[:answered]:
            t.done(TP, 100 + off)
            done.add(off)
            new = t.committable().get(TP)
            if new is not None:
                committed = new
            # The commit point is exactly the end of the contiguous answered prefix.
            prefix = 0
            while prefix in done:
                prefix += 1
            assert (committed or 100) == 100 + prefix
        assert t.in_flight() == 30 - answered

    def test_forget_drops_partition_and_ignores_late_answers(self) -> None:
        t = OffsetTracker()
        t.add(TP, 5)
        t.forget({TP})
        t.done(TP, 5)
        assert t.committable() == {} and t.in_flight() == 0


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 300), min_size=1, max_size=120),
    budget=st.integers(64, 2048),
    cap=st.integers(1, 64),
)
def test_benchmark_raw_engine_batches_match_the_worker_batcher(lengths: list[int], budget: int, cap: int) -> None:
    """bench's raw-engine path cuts batches as the worker does, so pipeline/raw compares the same calls."""
    from bench.worker_bench import batch_cuts

    async def worker_cuts() -> list[int]:
        b = TokenBudgetBatcher(budget, cap, max_wait_s=10.0)
        b.put(items_for(make_state(len(lengths), "r"), lengths))
        return [len(batch) for batch in await drain(b)]

    prompts = [list(range(n)) for n in lengths]
    assert [len(c) for c in batch_cuts(prompts, cap, budget)] == asyncio.run(worker_cuts())

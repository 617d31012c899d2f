"""Priority inside the engine (engine/driver.py): several callers share vLLM's steps, online prompts go ahead of
waiting bulk ones, and one bad call fails alone."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

from engine.engines import BULK_PRIORITY, ONLINE_PRIORITY
from schemas import ScoreRequest
from tests.conftest import WAIT_S
from worker.batching import Lane, RecordKey, RequestState, TokenBudgetBatcher, WorkItem

pytestmark = pytest.mark.engine


def state(n: int, rid: str, lane: Lane) -> RequestState:
    req = ScoreRequest(request_id=rid, query="q", candidates=[f"j{i}" for i in range(n)])
    st = RequestState(req, RecordKey("t", 0, 0), 0.0, lane=lane)
    st.job_ids, st.scores, st.remaining = [f"j{i}" for i in range(n)], [None] * n, n
    return st


def items(st: RequestState) -> list[WorkItem]:
    return [WorkItem(st, i, list(range(10)), 0.0) for i in range(len(st.job_ids))]


def wait_for_state(predicate: Any, what: str) -> None:
    """Until ``predicate()`` holds (the engine's own state, polled from this thread), or fail after WAIT_S."""
    tick = threading.Event()
    for _ in range(int(WAIT_S / 0.005)):
        if predicate():
            return
        tick.wait(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def prompts(n: int, seed: int, length: int = 120) -> list[list[int]]:
    rnd = random.Random(seed)
    return [[rnd.randrange(100, 900) for _ in range(length)] for _ in range(n)]


def test_online_call_overtakes_a_bulk_call_already_in_the_engine(vllm_engine: Any) -> None:
    # 600 bulk prompts (~72k tokens: many engine steps) are in the engine when 4 online prompts arrive. With
    # first-come-first-served scheduling the online ones would wait behind every bulk prompt; with priorities
    # they are scheduled at the next step, so the online call returns while bulk prompts are still in there.
    bulk = prompts(600, seed=1)
    online = prompts(4, seed=2)
    alone = vllm_engine.score_tokens(online)  # reference scores, engine idle
    bulk_done = threading.Event()
    bulk_scores: list[float] = []

    def run_bulk() -> None:
        bulk_scores.extend(vllm_engine.score_tokens(bulk, BULK_PRIORITY))
        bulk_done.set()

    t = threading.Thread(target=run_bulk)
    t.start()
    wait_for_state(lambda: vllm_engine.in_engine >= 300, what="the bulk call's prompts in the engine")
    scores = vllm_engine.score_tokens(online, ONLINE_PRIORITY)
    left = vllm_engine.in_engine
    overtook = not bulk_done.is_set()
    t.join(WAIT_S)
    assert overtook and left > 0, f"the online call waited for the bulk call ({left} bulk prompts left)"
    assert scores == pytest.approx(alone, abs=1e-5)  # sharing steps changes nothing in the answer
    assert len(bulk_scores) == 600 and all(0.0 <= s <= 1.0 for s in bulk_scores)


def test_an_online_call_is_handed_to_the_engine_during_the_step_in_progress(vllm_engine: Any) -> None:
    # vLLM's engine core runs in its own process and steps on its own; it takes new requests between two steps.
    # An online call that arrives mid-step must reach the core before that step ends, so the core schedules it
    # at the very next step: it returns with the second step output after its arrival (the one in progress,
    # then its own). Handed over only once the driver has the step's output, the core would already be in the
    # next bulk step and the call would return with the third. A call that arrives just as a step ends may
    # still miss one; most must not.
    bulk = prompts(1200, seed=4)
    t = threading.Thread(target=vllm_engine.score_tokens, args=(bulk, BULK_PRIORITY))
    t.start()
    wait_for_state(lambda: vllm_engine.in_engine >= 600, what="the bulk call's prompts in the engine")
    waited = []
    for i in range(6):
        start = vllm_engine.engine_steps
        wait_for_state(lambda s=start: vllm_engine.engine_steps > s, what="a fresh engine step")  # mid-step now
        before = vllm_engine.engine_steps
        vllm_engine.score_tokens(prompts(2, seed=20 + i), ONLINE_PRIORITY)
        waited.append(vllm_engine.engine_steps - before)
        assert vllm_engine.in_engine > 0, "the bulk call ended: the online calls were not measured under load"
    t.join(WAIT_S)
    assert sum(w <= 2 for w in waited) >= 4, f"step outputs each online call waited for: {waited}"


def test_concurrent_calls_get_their_own_scores(vllm_engine: Any) -> None:
    calls = [prompts(7, seed=10 + i, length=40 + 10 * i) for i in range(4)]
    expected = [vllm_engine.score_tokens(c) for c in calls]
    got: list[list[float]] = [[] for _ in calls]

    def run(i: int) -> None:
        got[i] = vllm_engine.score_tokens(calls[i], i % 2)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(WAIT_S)
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e, abs=1e-5)


def test_a_refused_prompt_fails_its_call_only(vllm_engine: Any) -> None:
    # A token id outside the vocabulary: the engine refuses the request; the worker's GuardedEngine then
    # isolates the prompt. The engine itself must keep serving other calls.
    with pytest.raises(Exception, match=r"vocabulary"):
        vllm_engine.score_tokens([[5, 6, 10**9]])
    assert vllm_engine.in_engine == 0
    assert len(vllm_engine.score_tokens(prompts(3, seed=3))) == 3


async def test_one_lane_batches_and_lanes_opened_by_a_poke() -> None:
    # What the worker asks of the batcher when the engine schedules by priority: batches of one lane, online
    # first, and bulk only while the engine has room (the lanes callable), re-asked on poke().
    import asyncio

    b = TokenBudgetBatcher(max_batch_tokens=10_000, max_batch_items=8, max_wait_s=0.0, max_bulk_items=4)
    b.put(items(state(6, "bulk", "bulk")))
    b.put(items(state(3, "online", "online")))
    allowed: tuple[Any, ...] = ("online",)
    first = await b.next_batch(lambda: allowed, mix_lanes=False)
    assert [it.state.lane for it in first] == ["online"] * 3  # no bulk fill: the engine mixes by priority
    pending = asyncio.ensure_future(b.next_batch(lambda: allowed, mix_lanes=False))
    await asyncio.sleep(0)
    assert not pending.done()  # only bulk queued, and bulk has no room
    allowed = ("online", "bulk")
    b.poke()
    assert [it.state.lane for it in await asyncio.wait_for(pending, WAIT_S)] == ["bulk"] * 4

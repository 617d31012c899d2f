"""The score cache (worker/scorecache.py): a repeated pair is answered from Redis with the score the engine
gave it, without an engine call; a new query is scored; a Redis that does not answer makes every pair a miss
(scored), never a failed request. Real broker, Redis and vLLM (the tiny model)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from client import RankingWaiter, new_request, publish_requests
from engine.corpus import postings
from jobscore.settings import CommonSettings, WorkerSettings
from ops.devstack import free_port
from tests.conftest import WAIT_S, wait_until
from tests.faults.conftest import DelegatingEngine
from tests.helpers import running, seed
from worker.loop import Worker
from worker.scorecache import ScoreCache, model_tag, prompt_digest


def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def lookups(result: str) -> float:
    return _count("jobscore_worker_score_cache_total", result=result)


def written() -> float:
    return _count("jobscore_worker_score_cache_writes_total", outcome="ok")


def test_key_is_the_exact_prompt_and_names_the_model() -> None:
    assert prompt_digest([1, 2, 3]) == prompt_digest([1, 2, 3])
    assert prompt_digest([1, 2, 3]) != prompt_digest([1, 2, 4])
    assert prompt_digest([1, 2, 3]) != prompt_digest([1, 2, 3, 0])
    tag = model_tag("SmolLM2-135M-Instruct-scorer", "scorer-lora-v2", "float32")
    assert tag == "SmolLM2-135M-Instruct-scorer@scorer-lora-v2/float32"
    cache = ScoreCache(aioredis.Redis(), tag, ttl_s=60)
    assert cache.key([1, 2]).startswith("jobscore:score:v1:SmolLM2-135M-Instruct-scorer@scorer-lora-v2/float32:")
    other = ScoreCache(aioredis.Redis(), model_tag("SmolLM2-135M-Instruct-scorer", "scorer-lora-v3", "float32"), 60)
    assert other.key([1, 2]) != cache.key([1, 2])  # a new revision never reads the old one's scores


async def test_redis_that_does_not_answer_is_a_miss_not_a_failure() -> None:
    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5)
    cache = ScoreCache(dead, "m@r/float32", ttl_s=60)
    errors, write_errors = lookups("error"), _count("jobscore_worker_score_cache_writes_total", outcome="error")
    assert await cache.get_many(["a", "b", "c"]) == [None, None, None]
    assert lookups("error") == errors + 3
    cache.put_many([("a", 0.5)])
    await cache.flush()  # the failed write is dropped, not raised
    assert _count("jobscore_worker_score_cache_writes_total", outcome="error") == write_errors + 1
    await dead.aclose()


@pytest.mark.engine
async def test_repeated_pairs_are_answered_from_the_cache_with_the_engines_scores(
    vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
) -> None:
    ws = worker_settings(score_cache_ttl_s=120)
    items = postings(8, seed=51, prefix=f"{ws.group_id}-job")
    await seed(ws, items)
    ids = [p.job_id for p in items]
    scored: list[Sequence[int]] = []
    engine = DelegatingEngine(vllm_engine, scored.extend)
    # The run id in the query: a rerun of this test must not hit the entries an earlier run left in Redis.
    query = f"data engineer {ws.group_id}"
    first = new_request(query, ids, top_k=8, request_id=f"{ws.group_id}-first")
    repeat = new_request(query, ids, top_k=8, request_id=f"{ws.group_id}-repeat")
    overlap = new_request(query, [*ids[:3]], top_k=3, request_id=f"{ws.group_id}-overlap")
    other = new_request(f"registered nurse {ws.group_id}", ids, top_k=8, request_id=f"{ws.group_id}-other")
    hits, misses, ok_writes = lookups("hit"), lookups("miss"), written()
    async with running(Worker(ws, engine)), RankingWaiter(ws) as waiter:
        await publish_requests(ws, [first])
        r1 = await waiter.wait(first.request_id, WAIT_S)
        assert len(scored) == 8 and lookups("miss") == misses + 8
        await wait_until(lambda: written() >= ok_writes + 8, what="the first request's scores in the cache")

        await publish_requests(ws, [repeat, overlap])
        r2 = await waiter.wait(repeat.request_id, WAIT_S)
        r3 = await waiter.wait(overlap.request_id, WAIT_S)
        assert len(scored) == 8, "a repeated pair must not reach the engine"
        assert lookups("hit") == hits + 11
        # The cached score is the engine's own (a float64 round trip through Redis: exact).
        assert [(j.job_id, j.score) for j in r2.results] == [(j.job_id, j.score) for j in r1.results]
        s1 = {j.job_id: j.score for j in r1.results}
        assert {j.job_id: j.score for j in r3.results} == {j: s1[j] for j in ids[:3]}

        await publish_requests(ws, [other])
        r4 = await waiter.wait(other.request_id, WAIT_S)
        assert len(scored) == 16, "another query is another prompt: scored, not served from the cache"
        assert {j.job_id for j in r4.results} == set(ids)

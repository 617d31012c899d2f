"""The scoring worker end to end: real broker, real Redis, real vLLM engine on the tiny model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import pytest

from client import RankingWaiter, new_request, publish_postings, publish_requests, tail
from engine.corpus import postings, queries
from engine.prompt import PromptTemplate
from jobscore.cache import SummaryCache
from jobscore.kafka import make_producer
from jobscore.settings import CommonSettings, SummarizerSettings, WorkerSettings
from schemas import DEAD_LETTERS, DeadLetter, ScoreRequest
from summarizer.service import Summarizer
from summarizer.writer import build_records
from tests.conftest import WAIT_S, wait_until
from tests.helpers import committed_offsets, next_offsets, running, seed
from worker.loop import EngineFailure, Worker

pytestmark = pytest.mark.engine


class TestEndToEnd:
    async def test_postings_to_ranking_full_path(
        self,
        vllm_engine: Any,
        worker_settings: Callable[..., WorkerSettings],
        summarizer_settings: Callable[..., SummarizerSettings],
        topics: CommonSettings,
    ) -> None:
        ws, ss = worker_settings(), summarizer_settings()
        items = postings(30, seed=2, paragraphs=2, prefix=f"{ws.group_id}-job")
        ids = [p.job_id for p in items]
        cache = SummaryCache.from_url(ws.redis_url, ws.summarizer_version)
        async with running(Summarizer(ss)), running(Worker(ws, vllm_engine)), RankingWaiter(ws) as waiter:
            await publish_postings(ss, items)

            async def summarized() -> bool:
                return all(r is not None for r in await cache.get_many(ids))

            await wait_until(summarized, what="summaries in Redis")
            req = new_request("senior python engineer", ids, top_k=7)
            await publish_requests(ws, [req])
            ranking = await waiter.wait(req.request_id, WAIT_S)
        await cache.close()

        assert ranking.status == "ok" and ranking.request_id == req.request_id
        assert len(ranking.results) == 7 and ranking.candidates_total == 30 and not ranking.errors
        scores = [r.score for r in ranking.results]
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 <= x <= 1.0 for x in scores)
        assert {r.job_id for r in ranking.results} <= set(ids)
        assert ranking.model_id == vllm_engine.info.model_id
        assert ranking.model_revision == vllm_engine.info.revision
        assert ranking.summarizer_version == ws.summarizer_version
        assert ranking.timings.score_ms > 0 and ranking.timings.total_ms >= ranking.timings.score_ms
        # The tiny model's scores spread: a ranking where every score is equal would hide ordering bugs.
        assert scores[0] - scores[-1] > 0.01

    async def test_missing_summary_is_reported_not_dropped(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        ws = worker_settings()
        items = postings(5, seed=4, prefix=f"{ws.group_id}-job")
        await seed(ws, items)
        cands = [p.job_id for p in items] + ["never-posted-1", "never-posted-2"]
        req = new_request("nurse", cands, top_k=10)
        async with running(Worker(ws, vllm_engine)), RankingWaiter(ws) as waiter:
            await publish_requests(ws, [req])
            ranking = await waiter.wait(req.request_id, WAIT_S)
        assert ranking.status == "ok"
        assert [r.job_id for r in ranking.results] != [] and len(ranking.results) == 5
        assert {(e.job_id, e.reason) for e in ranking.errors} == {
            ("never-posted-1", "missing_summary"),
            ("never-posted-2", "missing_summary"),
        }
        assert ranking.candidates_total == 7

    async def test_missing_summary_raw_fallback_scores_raw_description(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        # A new summarizer version is rolling out: two jobs have v2 summaries, two only v1 entries that carry
        # their raw description, one has nothing at all.
        ws = worker_settings(missing_summary="raw", raw_fallback_tokens=48)
        old = ws.model_copy(update={"summarizer_version": ws.summarizer_version + "-old"})
        items = postings(4, seed=13, paragraphs=4, prefix=f"{ws.group_id}-job")
        await seed(ws, items[:2])
        cache_old = SummaryCache.from_url(ws.redis_url, old.summarizer_version)
        recs = [
            r.__class__(**{**msgspec.structs.asdict(r), "raw": p.description})
            for r, p in zip(build_records(items[2:], old.summarizer_version, 128), items[2:], strict=True)
        ]
        await cache_old.write(recs)
        await cache_old.close()
        ws = ws.model_copy(update={"raw_fallback_version": old.summarizer_version})
        req = new_request("electrician", [p.job_id for p in items] + ["nowhere"], top_k=10)
        async with running(Worker(ws, vllm_engine)), RankingWaiter(ws) as waiter:
            await publish_requests(ws, [req])
            ranking = await waiter.wait(req.request_id, WAIT_S)
        assert {r.job_id for r in ranking.results} == {p.job_id for p in items}
        assert sorted(ranking.raw_fallback) == sorted(p.job_id for p in items[2:])
        assert [(e.job_id, e.reason) for e in ranking.errors] == [("nowhere", "missing_summary")]

    async def test_malformed_request_dead_lettered_next_request_served(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        ws = worker_settings()
        items = postings(4, seed=5, prefix=f"{ws.group_id}-job")
        await seed(ws, items)
        good = new_request("teacher", [p.job_id for p in items], top_k=2)
        async with running(Worker(ws, vllm_engine)) as task, RankingWaiter(ws) as waiter:
            producer = make_producer(ws)
            await producer.start()
            await producer.send_and_wait(ws.topic_requests, b"\xff\xfe garbage", key=b"bad-1")
            await producer.send_and_wait(
                ws.topic_requests,
                b'{"schema":"score_request.v2","request_id":"x","query":"q","candidates":["a"]}',
                key=b"bad-2",
            )
            await producer.stop()
            await publish_requests(ws, [good])
            ranking = await waiter.wait(good.request_id, WAIT_S)
            assert not task.done(), "the worker keeps running after poison messages"
        assert ranking.status == "ok" and len(ranking.results) == 2
        letters = [m async for _, m in tail(ws, DEAD_LETTERS, from_beginning=True, limit=2, idle_exit_s=WAIT_S)]
        by_key = {m.key: m for m in letters if isinstance(m, DeadLetter)}
        assert by_key[b"bad-1"].error_type == "malformed" and by_key[b"bad-1"].original == b"\xff\xfe garbage"
        assert by_key[b"bad-2"].error_type == "unknown_schema" and "score_request.v1" in by_key[b"bad-2"].reason
        assert all(m.stage == "worker" and m.topic == ws.topic_requests for m in by_key.values())

    async def test_expired_deadline_answered_with_timeout_not_scored(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        ws = worker_settings()
        items = postings(3, seed=6, prefix=f"{ws.group_id}-job")
        await seed(ws, items)
        late = ScoreRequest(
            request_id=f"{ws.group_id}-late",
            query="q",
            candidates=[items[0].job_id],
            deadline=time.time() - 1,
            created_at=time.time() - 2,
        )
        worker = Worker(ws, vllm_engine)
        async with running(worker), RankingWaiter(ws) as waiter:
            await publish_requests(ws, [late])
            ranking = await waiter.wait(late.request_id, WAIT_S)
        assert ranking.status == "timeout" and ranking.results == [] and "deadline" in ranking.detail
        # Answered at intake, before its summaries are fetched — not later, when it reaches a batch.
        assert "before scoring started" in ranking.detail, ranking.detail
        # Not scored: the engine never saw it.
        assert worker.items_scored == 0 and worker.batches == 0 and worker.engine_seconds == 0.0

    async def test_request_over_max_candidates_rejected_with_reason(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        ws = worker_settings(max_candidates=3)
        req = new_request("q", ["a", "b", "c", "d"])
        async with running(Worker(ws, vllm_engine)), RankingWaiter(ws) as waiter:
            await publish_requests(ws, [req])
            ranking = await waiter.wait(req.request_id, WAIT_S)
        assert ranking.status == "rejected" and "max_candidates=3" in ranking.detail
        letters = [m async for _, m in tail(ws, DEAD_LETTERS, from_beginning=True, limit=1, idle_exit_s=WAIT_S)]
        assert isinstance(letters[0], DeadLetter) and letters[0].error_type == "oversized"


class TestDelivery:
    async def test_worker_restart_resumes_at_committed_offsets(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        ws = worker_settings(max_records=3)
        items = postings(6, seed=8, prefix=f"{ws.group_id}-job")
        await seed(ws, items)
        reqs = [
            new_request(q, [p.job_id for p in items], top_k=3, request_id=f"{ws.group_id}-r{i}")
            for i, q in enumerate(queries(24, seed=8))
        ]
        wave1, wave2 = reqs[:12], reqs[12:]
        async with RankingWaiter(ws) as waiter:
            await publish_requests(ws, wave1)
            first = Worker(ws, vllm_engine)
            async with running(first):
                await waiter.wait_all([r.request_id for r in wave1], WAIT_S)
            # Stopped: everything it answered is committed.
            assert await committed_offsets(ws) == await next_offsets(ws, len(wave1))
            await publish_requests(ws, wave2)  # while no worker runs
            second = Worker(ws, vllm_engine)
            async with running(second):
                rankings = await waiter.wait_all([r.request_id for r in reqs], WAIT_S)
        assert set(rankings) == {r.request_id for r in reqs}
        assert all(r.status == "ok" and len(r.results) == 3 for r in rankings.values())
        # The second worker started exactly where the first committed: no request redone, none lost.
        assert first.requests_done == len(wave1) and second.requests_done == len(wave2)
        assert await committed_offsets(ws) == await next_offsets(ws, len(reqs))

    async def test_stop_with_queued_work_answers_and_commits_all_of_it(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        # Small batches and a small queue so the stop lands while requests are queued and in the engine.
        ws = worker_settings(max_records=2, max_batch_items=4, max_queued_items=8, drain_timeout_s=30)
        items = postings(6, seed=12, prefix=f"{ws.group_id}-job")
        await seed(ws, items)
        reqs = [
            new_request(q, [p.job_id for p in items], top_k=2, request_id=f"{ws.group_id}-m{i}")
            for i, q in enumerate(queries(40, seed=12))
        ]
        async with RankingWaiter(ws) as waiter:
            await publish_requests(ws, reqs)
            first = Worker(ws, vllm_engine)
            async with running(first):
                await wait_until(
                    lambda: first.requests_done >= 2 and first.offsets.in_flight() > 0 and len(first.batcher) > 0,
                    what="the first worker to have answered some requests and queued others",
                )
                # No await between this snapshot and the stop below (leaving the block).
                done_at_stop, in_flight_at_stop = first.requests_done, first.offsets.in_flight()
            committed_after_stop = await committed_offsets(ws)
            # Everything consumed before the stop was answered (the queue drained, nothing dropped)...
            assert in_flight_at_stop > 0 and first.offsets.in_flight() == 0
            assert first.requests_done >= done_at_stop + in_flight_at_stop
            # ...and committed: the group's offsets cover exactly what the first worker answered.
            assert sum(v or 0 for v in committed_after_stop.values()) == first.requests_done < len(reqs)
            second = Worker(ws, vllm_engine)
            async with running(second):
                rankings = await waiter.wait_all([r.request_id for r in reqs], WAIT_S)
        assert set(rankings) == {r.request_id for r in reqs}
        # The second worker started where the first committed: no request answered twice, none lost.
        assert first.requests_done + second.requests_done == len(reqs) and waiter.duplicates == 0
        assert await committed_offsets(ws) == await next_offsets(ws, len(reqs))

    async def test_engine_failure_commits_nothing(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        class Broken:
            info = vllm_engine.info
            max_model_len = vllm_engine.max_model_len
            tokenizer = vllm_engine.tokenizer

            def score(self, prompts: Sequence[str]) -> list[float]:
                raise RuntimeError("device lost")

            def score_tokens(self, prompts: Sequence[Sequence[int]]) -> list[float]:
                raise RuntimeError("device lost")

            def count_tokens(self, texts: Sequence[str]) -> list[int]:
                return vllm_engine.count_tokens(texts)

            def close(self) -> None:
                pass

        ws = worker_settings()
        items = postings(2, seed=9, prefix=f"{ws.group_id}-job")
        await seed(ws, items)
        await publish_requests(ws, [new_request("q", [p.job_id for p in items])])
        worker = Worker(ws, Broken())  # type: ignore[arg-type]
        await worker.start()
        try:
            with pytest.raises(EngineFailure):
                await asyncio.wait_for(worker.run(), WAIT_S)
        finally:
            await worker.close()
        assert all(v is None for v in (await committed_offsets(ws)).values())


class TestEngines:
    def test_vllm_scores_match_hf_reference(self, vllm_engine: Any, hf_engine: Any) -> None:
        tmpl = PromptTemplate.qwen3_reranker()
        recs = build_records(postings(24, seed=10, paragraphs=2), "v", 128)
        prompts = [tmpl.render(q, r.summary) for q, r in zip(queries(24, seed=10), recs, strict=True)]
        want = hf_engine.score(prompts)
        got = vllm_engine.score(prompts)
        assert got == pytest.approx(want, abs=1e-4)
        assert max(want) - min(want) > 0.1, "scores should spread on the tiny model"


async def test_produce_retries_back_off_by_the_kafka_setting_not_the_redis_one(
    hf_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's produce retries were capped by redis_retry_max_s (a broker's leader election and a Redis
    # restart take different times): they have their own cap now.
    import worker.outbox

    seen: dict[str, Any] = {}

    async def recording_retry(fn: Any, **kw: Any) -> None:
        seen.update(kw)

    monkeypatch.setattr(worker.outbox, "retry", recording_retry)
    w = Worker(WorkerSettings(kafka_send_retry_max_s=0.25, redis_retry_max_s=7.0, kafka_send_attempts=3), hf_engine)
    w.shell.producer = object()  # type: ignore[assignment]
    await w.outbox.send("topic", b"value", None)
    assert seen["op"] == "produce" and seen["attempts"] == 3
    assert seen["backoff"].max_s == 0.25

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import pytest

from client import publish_postings, tail
from engine.corpus import postings
from jobscore.cache import SummaryCache
from jobscore.kafka import make_producer
from jobscore.service import run_service
from jobscore.settings import CommonSettings, SummarizerSettings
from schemas import DEAD_LETTERS, DeadLetter, JobPosted
from schemas.summary import SummaryRecord, content_hash
from summarizer.extractive import approx_tokens, summarize
from summarizer.service import Summarizer
from tests.conftest import WAIT_S, wait_until
from tests.helpers import all_present, committed_total


class TestExtractive:
    def test_summarize_long_posting_stays_within_budget_and_keeps_fields(self) -> None:
        for p in postings(30, seed=3, paragraphs=8):
            ex = summarize(p, budget_tokens=128)
            assert ex.summary_tokens <= 128
            assert ex.raw_tokens >= 5 * ex.summary_tokens  # long postings compress well
            assert f"Title: {p.title}" in ex.summary
            assert f"Location: {p.location}" in ex.summary
            assert "Skills: " in ex.summary and ex.skills

    def test_summarize_drops_boilerplate_before_job_content(self) -> None:
        p = JobPosted(
            job_id="j",
            title="Senior Data Scientist",
            location="Berlin",
            description="We offer a competitive salary and free snacks in our office. "
            "You will build statistics and machine learning models in Python. "
            "We are an equal opportunity employer and celebrate diversity.",
        )
        ex = summarize(p, budget_tokens=50)
        assert "machine learning models in Python" in ex.summary
        assert "snacks" not in ex.summary
        assert ex.seniority == "senior"
        assert {"python", "machine learning", "statistics"} <= set(ex.skills)

    def test_content_hash_changes_only_with_content(self) -> None:
        a = JobPosted(job_id="j", title="T", description="D", posted_at=1)
        b = JobPosted(job_id="j", title="T", description="D", posted_at=2)
        c = JobPosted(job_id="j", title="T", description="D2")
        assert content_hash(a) == content_hash(b) != content_hash(c)

    def test_approx_tokens_counts_words_and_punctuation(self) -> None:
        assert approx_tokens("") == 0
        assert approx_tokens("one two three.") == 6  # 4 pieces × 1.3, rounded up


async def _run(svc: Summarizer) -> asyncio.Task[None]:
    await svc.start()
    return asyncio.create_task(svc.run())


async def _stop(svc: Summarizer, task: asyncio.Task[None]) -> None:
    svc.stop()
    await asyncio.wait_for(task, WAIT_S)
    await svc.close()


class TestSummarizerService:
    async def test_postings_land_in_redis_and_offsets_are_committed(
        self, summarizer_settings: Callable[..., SummarizerSettings], topics: CommonSettings
    ) -> None:
        s = summarizer_settings()
        cache = SummaryCache.from_url(s.redis_url, s.summarizer_version)
        items = postings(40, seed=1, paragraphs=3, prefix=f"{s.group_id}-job")
        svc = Summarizer(s)
        task = await _run(svc)
        try:
            await publish_postings(s, items)
            ids = [p.job_id for p in items]
            await wait_until(lambda: all_present(cache, ids), what="all summaries in Redis")
            recs = await cache.get_many(ids)
            for p, r in zip(items, recs, strict=True):
                assert isinstance(r, SummaryRecord)
                assert r.job_id == p.job_id and r.version == s.summarizer_version and r.mode == "extractive"
                assert r.content_hash == content_hash(p)
                assert r.summary_tokens <= s.summary_budget_tokens < r.raw_tokens
                assert p.title in r.summary
            await wait_until(lambda: svc.postings_done == len(items), what="offsets committed")
        finally:
            await _stop(svc, task)
        # Broker state: the group's committed offsets cover every posting.
        assert await committed_total(s) == len(items)
        await cache.close()

    async def test_tombstone_deletes_and_update_replaces_summary(
        self, summarizer_settings: Callable[..., SummarizerSettings], topics: CommonSettings
    ) -> None:
        s = summarizer_settings()
        cache = SummaryCache.from_url(s.redis_url, s.summarizer_version)
        svc = Summarizer(s)
        task = await _run(svc)
        try:
            a = JobPosted(job_id=f"{s.group_id}-a", title="Electrician", description="Wiring and conduit work.")
            b = JobPosted(job_id=f"{s.group_id}-b", title="Nurse", description="Patient care on a ward.")
            await publish_postings(s, [a, b])
            await wait_until(lambda: all_present(cache, [a.job_id, b.job_id]), what="summaries")
            a2 = JobPosted(job_id=a.job_id, title="Senior Electrician", description="Industrial wiring.")
            await publish_postings(s, [a2, JobPosted(job_id=b.job_id, deleted=True)])

            async def updated() -> bool:
                ra, rb = await cache.get_many([a.job_id, b.job_id])
                return isinstance(ra, SummaryRecord) and ra.content_hash == content_hash(a2) and rb is None

            await wait_until(updated, what="update applied and tombstone deleted")
            (ra,) = await cache.get_many([a.job_id])
            assert isinstance(ra, SummaryRecord) and "Senior Electrician" in ra.summary
        finally:
            await _stop(svc, task)
            await cache.close()

    async def test_malformed_posting_goes_to_dead_letters_and_service_continues(
        self, summarizer_settings: Callable[..., SummarizerSettings], topics: CommonSettings
    ) -> None:
        s = summarizer_settings()
        cache = SummaryCache.from_url(s.redis_url, s.summarizer_version)
        svc = Summarizer(s)
        task = await _run(svc)
        try:
            producer = make_producer(s)
            await producer.start()
            await producer.send_and_wait(s.topic_postings, b"not json at all", key=b"k1")
            await producer.send_and_wait(s.topic_postings, b'{"schema":"job_posted.v7","job_id":"x"}', key=b"k2")
            await producer.stop()
            good = JobPosted(job_id=f"{s.group_id}-good", title="Teacher", description="Lesson planning.")
            await publish_postings(s, [good])
            await wait_until(lambda: all_present(cache, [good.job_id]), what="the valid posting's summary")
            letters = [m async for _, m in tail(s, DEAD_LETTERS, from_beginning=True, limit=2, idle_exit_s=WAIT_S)]
            assert all(isinstance(m, DeadLetter) for m in letters)
            kinds = sorted(m.error_type for m in letters)  # type: ignore[union-attr]
            assert kinds == ["malformed", "unknown_schema"]
            by_key = {m.key: m for m in letters}  # type: ignore[union-attr]
            assert by_key[b"k1"].original == b"not json at all" and by_key[b"k1"].stage == "summarizer"
            assert "job_posted.v1" in by_key[b"k2"].reason
        finally:
            await _stop(svc, task)
            await cache.close()


async def test_stop_during_start_up_abandons_it_cleanly(
    summarizer_settings: Callable[..., SummarizerSettings], caplog: pytest.LogCaptureFixture
) -> None:
    """The summarizer runs in the same service shell as the worker (jobscore/service.py), so a stop signal
    during a start-up that hangs on a broker that never answers ends it: nothing consumed, no error."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)  # accepts connections and never answers: a hung broker
    try:
        s = summarizer_settings(kafka_bootstrap=f"127.0.0.1:{hole.getsockname()[1]}")
        stop = asyncio.Event()
        caplog.set_level(logging.INFO, logger="jobscore.service")
        task = asyncio.create_task(run_service(Summarizer(s), stop, "summarizer"))
        await wait_until(lambda: "start-up: ensuring topics" in caplog.text, what="the start-up reaching the broker")
        assert not task.done()
        stop.set()
        started = await asyncio.wait_for(task, WAIT_S)
        assert started is False
        assert "summarizer: stopped during start-up: nothing was consumed" in caplog.text
    finally:
        hole.close()

"""Summarizer modes (extractive + MiniLM/MMR, hybrid with ESCO skills, abstractive in vLLM) and the
cache semantics of the service running them, against the real broker and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from client import publish_postings, tail
from engine.corpus import postings
from jobscore.cache import SummaryCache
from jobscore.kafka import make_producer
from jobscore.settings import CommonSettings, SummarizerSettings
from schemas import DEAD_LETTERS, DeadLetter, JobPosted
from schemas.summary import SummaryRecord, content_hash, summary_key
from summarizer.embed import MiniLM
from summarizer.extractive import Extracted, approx_tokens
from summarizer.modes import (
    AbstractiveSummarizer,
    ExtractiveSummarizer,
    HybridSummarizer,
    detect_employment,
    detect_remote,
    detect_salary,
    fit_text,
    hf_token_counter,
)
from summarizer.service import Summarizer
from summarizer.skills import SkillMatcher, default_matcher, esco_labels, preferred_label
from tests.conftest import WAIT_S, wait_until
from tests.helpers import all_present, committed_total

BUDGET = 128


@pytest.fixture(scope="module")
def embedder(minilm: MiniLM) -> MiniLM:
    return minilm  # the session's one MiniLM (tests/conftest.py)


@pytest.fixture(scope="module")
def long_postings() -> list[JobPosted]:
    return postings(12, seed=21, paragraphs=8)


def _check_budget_and_fields(items: Sequence[JobPosted], out: Sequence[Extracted], budget: int) -> None:
    assert len(out) == len(items)
    for p, ex in zip(items, out, strict=True):
        assert ex.summary_tokens == approx_tokens(ex.summary) <= budget, ex.summary
        assert ex.raw_tokens >= 5 * ex.summary_tokens  # ~1,000-token postings compress well
        assert f"Title: {p.title}" in ex.summary
        assert f"Location: {p.location}" in ex.summary
        assert "\nSkills: " in ex.summary and ex.skills
        assert "\nSummary: " in ex.summary


class TestEsco:
    def test_labels_recovered_from_run_together_csv_text(self) -> None:
        labels = set(esco_labels())
        assert len(labels) > 5000
        assert {"project management", "sql server", "java", "python"} <= labels
        # The run "Java (computer programming) Java The techniques..." yields the part before "(".
        assert preferred_label("Java (computer programming) Java The techniques of software development.") == "Java"
        # Ambiguous runs are skipped rather than guessed.
        assert preferred_label("alpha beta gamma delta epsilon zeta eta The description here.") is None

    def test_matcher_prefers_longest_phrase_in_mention_order(self) -> None:
        m = SkillMatcher(["sql", "sql server", "project management", "python"])
        assert m.find("Python and MS SQL Server; project management.") == ("python", "sql server", "project management")
        found = default_matcher().find("We use SQL Server, statistics and project management daily.")
        assert found[:3] == ("sql server", "statistics", "project management")


class TestExtractiveModes:
    def test_extractive_embeddings_within_budget_keep_fields(
        self, embedder: MiniLM, long_postings: list[JobPosted]
    ) -> None:
        out = ExtractiveSummarizer(BUDGET, embedder).summarize_batch(long_postings)
        _check_budget_and_fields(long_postings, out, BUDGET)

    def test_exact_budget_with_the_scorers_tokenizer(self, embedder: MiniLM, long_postings: list[JobPosted]) -> None:
        from engine.models import smollm2_dir

        count = hf_token_counter(smollm2_dir())
        for summ in (
            ExtractiveSummarizer(BUDGET, embedder, count=count),
            HybridSummarizer(BUDGET, embedder, count=count),
        ):
            out = summ.summarize_batch(long_postings)
            for p, ex in zip(long_postings, out, strict=True):
                assert ex.summary_tokens == count(ex.summary) <= BUDGET
                assert f"Title: {p.title}" in ex.summary and "\nSummary: " in ex.summary
            # The budget is used, not just respected: summaries land close to it.
            assert sum(e.summary_tokens for e in out) / len(out) > 0.75 * BUDGET

    def test_extractive_mmr_skips_repeats_and_boilerplate(self, embedder: MiniLM) -> None:
        p = JobPosted(
            job_id="j",
            title="Data Scientist",
            location="Berlin",
            description=(
                "You will build machine learning models in Python. "
                "You will build machine learning models in Python. "
                "We offer a competitive salary, equity and free snacks. "
                "You will design A/B tests and report statistics to product teams."
            ),
        )
        (ex,) = ExtractiveSummarizer(BUDGET, embedder).summarize_batch([p])
        assert ex.summary.count("machine learning models in Python") == 1
        assert "A/B tests" in ex.summary and "snacks" not in ex.summary

    def test_hybrid_within_budget_keeps_fields_and_is_shorter(
        self, embedder: MiniLM, long_postings: list[JobPosted]
    ) -> None:
        hyb = HybridSummarizer(BUDGET, embedder).summarize_batch(long_postings)
        _check_budget_and_fields(long_postings, hyb, BUDGET)
        ext = ExtractiveSummarizer(BUDGET, embedder).summarize_batch(long_postings)
        assert sum(h.summary_tokens for h in hyb) < sum(e.summary_tokens for e in ext)

    def test_hybrid_parses_remote_salary_employment_and_esco_skills(self, embedder: MiniLM) -> None:
        p = JobPosted(
            job_id="j",
            title="Senior Welder",
            company="Acme",
            location="Leeds, UK",
            description=(
                "This is a full-time, fully remote role paying £45,000 - £52,000 per year. "
                "You will weld steel frames and read technical drawings. "
                "Experience with project management and SQL Server is a plus."
            ),
        )
        (ex,) = HybridSummarizer(BUDGET, embedder).summarize_batch([p])
        header = ex.summary.split("\nSummary:")[0]
        assert header.startswith("Title: Senior Welder | Company: Acme | Location: Leeds, UK | Remote: remote")
        assert "Seniority: senior" in header and "Employment: full-time" in header
        assert "Salary: £45,000 - £52,000 per year" in header
        assert {"project management", "sql server"} <= set(ex.skills)
        assert "apply" not in ex.skills and "read technical" not in ex.skills  # recovery errors filtered

    def test_field_parsers(self) -> None:
        assert detect_salary("Pay: $120k-$150k a year, plus bonus") == "$120k-$150k a year"
        assert detect_salary("no pay mentioned") == ""
        assert detect_remote("Remote", "") == "remote"
        assert detect_remote("Berlin", "Flexible hours and hybrid work.") == "hybrid"
        assert detect_employment("A 6-month contract role") == "contract"

    def test_fit_text_cuts_at_sentence_then_word(self) -> None:
        text = "One two three four. Five six seven eight. Nine ten."
        assert fit_text(text, 100) == text
        assert fit_text(text, approx_tokens("One two three four.")) == "One two three four."
        cut = fit_text("a " * 200, 10)
        assert 0 < approx_tokens(cut) <= 10


@pytest.fixture(scope="module")
def abstractive() -> Iterator[AbstractiveSummarizer]:
    """One real vLLM engine (SmolLM2-135M-Instruct) for the module: ~40-60 s to start on two cores."""
    from summarizer.abstractive import VllmGenerator

    # Eager: skips the compile warm-up, which dominates a start that serves only a few postings.
    gen = VllmGenerator(max_input_tokens=768, max_model_len=1280, max_num_seqs=8, enforce_eager=True)
    s = AbstractiveSummarizer(BUDGET, gen)
    yield s
    s.close()


class TestAbstractive:
    def test_abstractive_within_budget_keeps_fields_and_generates_text(
        self, abstractive: AbstractiveSummarizer, long_postings: list[JobPosted]
    ) -> None:
        items = long_postings[:3]
        out = abstractive.summarize_batch(items)
        _check_budget_and_fields(items, out, BUDGET)
        for ex in out:
            body = ex.summary.split("\nSummary: ", 1)[1]
            assert len(body.split()) >= 5  # the model wrote something, not an empty completion
            assert "<|im_" not in body  # no chat-template tokens leak into the summary

    async def test_service_in_abstractive_mode_records_mode(
        self,
        abstractive: AbstractiveSummarizer,
        summarizer_settings: Callable[..., SummarizerSettings],
        topics: CommonSettings,
    ) -> None:
        s = summarizer_settings(summarizer_mode="abstractive")
        cache = SummaryCache.from_url(s.redis_url, s.summarizer_version)
        items = postings(2, seed=4, paragraphs=4, prefix=f"{s.group_id}-job")
        svc = Summarizer(s, abstractive)
        task = await _run(svc)
        try:
            await publish_postings(s, items)
            ids = [p.job_id for p in items]
            await wait_until(lambda: all_present(cache, ids), what="abstractive summaries in Redis")
            for p, r in zip(items, await cache.get_many(ids), strict=True):
                assert isinstance(r, SummaryRecord) and r.mode == "abstractive"
                assert r.summary_tokens <= BUDGET and f"Title: {p.title}" in r.summary
        finally:
            await _stop(svc, task)
            await cache.close()


# --- the service: cache semantics, failures, restart ----------------------------------------------


@pytest.fixture(scope="module")
def extractive(embedder: MiniLM) -> ExtractiveSummarizer:
    return ExtractiveSummarizer(BUDGET, embedder)


async def _run(svc: Summarizer) -> asyncio.Task[None]:
    await svc.start()
    return asyncio.create_task(svc.run())


async def _stop(svc: Summarizer, task: asyncio.Task[None]) -> None:
    svc.stop()
    await asyncio.wait_for(task, WAIT_S)
    await svc.close()


class _FailsOnTitle(ExtractiveSummarizer):
    """The real extractive summarizer, except that it raises on one title (a summarizer bug)."""

    def summarize_batch(self, postings: Sequence[JobPosted]) -> list[Extracted]:
        if any(p.title == "boom" for p in postings):
            raise RuntimeError("cannot summarize a posting titled boom")
        return super().summarize_batch(postings)


class _Counting(ExtractiveSummarizer):
    """The real extractive summarizer, counting which postings it was asked to summarize."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.summarized: list[str] = []

    def summarize_batch(self, postings: Sequence[JobPosted]) -> list[Extracted]:
        self.summarized.extend(p.job_id for p in postings)
        return super().summarize_batch(postings)


class TestServiceSemantics:
    async def test_hybrid_mode_with_store_raw_records_mode_and_raw(
        self, embedder: MiniLM, summarizer_settings: Callable[..., SummarizerSettings], topics: CommonSettings
    ) -> None:
        s = summarizer_settings(summarizer_mode="hybrid", store_raw=True, raw_max_chars=300)
        cache = SummaryCache.from_url(s.redis_url, s.summarizer_version)
        items = postings(6, seed=8, paragraphs=8, prefix=f"{s.group_id}-job")
        svc = Summarizer(s, HybridSummarizer(BUDGET, embedder))
        task = await _run(svc)
        try:
            await publish_postings(s, items)
            ids = [p.job_id for p in items]
            await wait_until(lambda: all_present(cache, ids), what="hybrid summaries")
            for p, r in zip(items, await cache.get_many(ids), strict=True):
                assert isinstance(r, SummaryRecord) and r.mode == "hybrid"
                assert r.raw == p.description[:300] and r.content_hash == content_hash(p)
                assert r.summary_tokens <= BUDGET < r.raw_tokens
        finally:
            await _stop(svc, task)
            await cache.close()

    async def test_repost_with_same_content_is_not_resummarized(
        self,
        embedder: MiniLM,
        summarizer_settings: Callable[..., SummarizerSettings],
        topics: CommonSettings,
    ) -> None:
        s = summarizer_settings(store_raw=False)
        cache = SummaryCache.from_url(s.redis_url, s.summarizer_version)
        a = JobPosted(job_id=f"{s.group_id}-a", title="Nurse", description="Patient care on a ward.", posted_at=1)
        counting = _Counting(BUDGET, embedder)
        svc = Summarizer(s, counting)
        task = await _run(svc)
        try:
            await publish_postings(s, [a])
            await wait_until(lambda: all_present(cache, [a.job_id]), what="first summary")
            (first,) = await cache.get_many([a.job_id])
            assert isinstance(first, SummaryRecord) and first.raw is None
            # Same content re-posted (a new posted_at), then a marker posting behind it on the topic.
            again = JobPosted(job_id=a.job_id, title=a.title, description=a.description, posted_at=2)
            marker = JobPosted(job_id=f"{s.group_id}-m", title="Teacher", description="Lesson planning.")
            await publish_postings(s, [again, marker])
            await wait_until(lambda: svc.postings_done == 3, what="re-post and marker processed")
            (after,) = await cache.get_many([a.job_id])
            assert after == first  # same created_at: the cached summary was not rewritten
            # ...and not recomputed either: the summarizer saw the posting once, then only the marker.
            assert counting.summarized == [a.job_id, marker.job_id]
        finally:
            await _stop(svc, task)
            await cache.close()

    async def test_summary_entry_expires_after_summary_ttl_s(
        self,
        extractive: ExtractiveSummarizer,
        summarizer_settings: Callable[..., SummarizerSettings],
        topics: CommonSettings,
    ) -> None:
        s = summarizer_settings(summary_ttl_s=777)
        cache = SummaryCache.from_url(s.redis_url, s.summarizer_version)
        a = JobPosted(job_id=f"{s.group_id}-a", title="Nurse", description="Patient care on a ward.")
        svc = Summarizer(s, extractive)
        task = await _run(svc)
        try:
            await publish_postings(s, [a])
            await wait_until(lambda: all_present(cache, [a.job_id]), what="the summary")
            # Redis holds the key with the configured expiry (TTL -1 would mean "forever").
            ttl = await cache.client.ttl(summary_key(s.summarizer_version, a.job_id))
            assert 0 < ttl <= 777
        finally:
            await _stop(svc, task)
            await cache.close()

    async def test_invalid_and_unsummarizable_postings_go_to_dead_letters_with_reason(
        self, embedder: MiniLM, summarizer_settings: Callable[..., SummarizerSettings], topics: CommonSettings
    ) -> None:
        s = summarizer_settings()
        cache = SummaryCache.from_url(s.redis_url, s.summarizer_version)
        svc = Summarizer(s, _FailsOnTitle(BUDGET, embedder))
        task = await _run(svc)
        try:
            producer = make_producer(s)
            await producer.start()
            await producer.send_and_wait(
                s.topic_postings, b'{"schema":"job_posted.v1","job_id":"has space","title":"x"}', key=b"bad-id"
            )
            await producer.stop()
            boom = JobPosted(job_id=f"{s.group_id}-boom", title="boom", description="Anything.")
            good = JobPosted(job_id=f"{s.group_id}-good", title="Teacher", description="Lesson planning.")
            await publish_postings(s, [boom, good])
            await wait_until(lambda: all_present(cache, [good.job_id]), what="the good posting's summary")
            letters = [m async for _, m in tail(s, DEAD_LETTERS, from_beginning=True, limit=2, idle_exit_s=WAIT_S)]
            by_type = {m.error_type: m for m in letters if isinstance(m, DeadLetter)}
            assert set(by_type) == {"invalid", "summarize_failed"}
            assert "job_id" in by_type["invalid"].reason and by_type["invalid"].key == b"bad-id"
            failed = by_type["summarize_failed"]
            assert "cannot summarize a posting titled boom" in failed.reason and failed.stage == "summarizer"
            assert b'"boom"' in failed.original
            assert (await cache.get_many([boom.job_id])) == [None]
            await wait_until(lambda: svc.postings_done == 3, what="all three offsets passed")
        finally:
            await _stop(svc, task)
            await cache.close()
        assert await committed_total(s) == 3

    async def test_summaries_survive_restart_and_resume_after_last_commit(
        self,
        extractive: ExtractiveSummarizer,
        summarizer_settings: Callable[..., SummarizerSettings],
        topics: CommonSettings,
    ) -> None:
        s = summarizer_settings()
        cache = SummaryCache.from_url(s.redis_url, s.summarizer_version)
        first = postings(8, seed=12, paragraphs=2, prefix=f"{s.group_id}-a")
        second = postings(5, seed=13, paragraphs=2, prefix=f"{s.group_id}-b")
        svc = Summarizer(s, extractive)
        task = await _run(svc)
        try:
            await publish_postings(s, first)
            await wait_until(lambda: all_present(cache, [p.job_id for p in first]), what="first batch")
            await wait_until(lambda: svc.postings_done == len(first), what="first batch committed")
            before = await cache.get_many([p.job_id for p in first])
        finally:
            await _stop(svc, task)
        assert await committed_total(s) == len(first)
        # While the summarizer is down, more postings arrive; a new process in the same group resumes.
        await publish_postings(s, second)
        svc2 = Summarizer(s, extractive)
        task2 = await _run(svc2)
        try:
            await wait_until(lambda: all_present(cache, [p.job_id for p in second]), what="second batch")
            await wait_until(lambda: svc2.postings_done == len(second), what="second batch committed")
        finally:
            await _stop(svc2, task2)
        # The restarted consumer read only what was not committed, and the earlier summaries are intact.
        assert svc2.postings_done == len(second)
        assert await cache.get_many([p.job_id for p in first]) == before
        assert await committed_total(s) == len(first) + len(second)
        await cache.close()

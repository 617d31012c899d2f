"""Backfill of an existing corpus into the real Redis summary cache: batched, resumable, invalid rows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from engine.corpus import postings
from jobscore.cache import SummaryCache
from jobscore.settings import SummarizerSettings
from schemas import JobPosted
from schemas.summary import SummaryRecord, content_hash
from summarizer.backfill import backfill, checkpoint_path, iter_rows
from summarizer.modes import ExtractiveSummarizer, PostingSummarizer


class _StopAfterFirstBatch:
    """Wraps the real summarizer; sets the stop event (as Ctrl-C would) during the first batch."""

    def __init__(self, inner: PostingSummarizer, stop: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
        self.inner, self.stop, self.loop, self.mode = inner, stop, loop, inner.mode

    def summarize_batch(self, items):  # type: ignore[no-untyped-def]
        self.loop.call_soon_threadsafe(self.stop.set)
        return self.inner.summarize_batch(items)

    def close(self) -> None:
        pass


def _write_jsonl(path: Path, items: list[JobPosted], bad_line_at: int) -> None:
    lines = []
    for p in items:
        row = json.loads(msgspec.json.encode(p))
        row.pop("schema")  # rows from a corpus dump need not carry the wire tag
        lines.append(json.dumps(row))
    lines.insert(bad_line_at, '{"job_id": "no description", "title": 3}')
    path.write_text("\n".join(lines) + "\n")


class TestBackfill:
    async def test_backfill_interrupted_then_resumed_writes_every_posting_once(
        self, summarizer_settings: Callable[..., SummarizerSettings], tmp_path: Path
    ) -> None:
        s = summarizer_settings(store_raw=True, raw_max_chars=100)
        items = postings(23, seed=31, paragraphs=4, prefix=f"{s.group_id}-job")
        src = tmp_path / "corpus.jsonl"
        _write_jsonl(src, items, bad_line_at=5)
        summ = ExtractiveSummarizer(128)  # keyword scoring: this test is about the backfill mechanics
        cache = SummaryCache.from_url(s.redis_url, s.summarizer_version)
        ids = [p.job_id for p in items]
        try:
            stop = asyncio.Event()
            wrapped = _StopAfterFirstBatch(summ, stop, asyncio.get_running_loop())
            rep1 = await backfill(s, src, summarizer=wrapped, batch_size=10, stop=stop, progress=False)
            # The batch in flight at "Ctrl-C" was finished and checkpointed, nothing after it.
            assert rep1.interrupted and rep1.rows == 10 and rep1.invalid == 1 and rep1.written == 9
            ckpt = json.loads(checkpoint_path(src).read_text())
            assert ckpt["rows_done"] == 10 and ckpt["done"] is False
            got = await cache.get_many(ids)
            assert sum(r is not None for r in got) == 9 and all(r is None for r in got[9:])
            first_nine = got[:9]

            rep2 = await backfill(s, src, summarizer=summ, batch_size=10, progress=False)
            assert not rep2.interrupted and rep2.resumed_from == 10
            assert rep2.rows == 14 and rep2.written == 14 and rep2.invalid == 0 and rep2.unchanged == 0
            assert json.loads(checkpoint_path(src).read_text()) == {**ckpt, "rows_done": 24, "done": True}
            got = await cache.get_many(ids)
            assert got[:9] == first_nine  # resumed: the first batch was not redone
            for p, r in zip(items, got, strict=True):
                assert isinstance(r, SummaryRecord) and r.content_hash == content_hash(p)
                assert r.mode == "extractive" and r.raw == p.description[:100]
                assert r.summary_tokens <= 128 and f"Title: {p.title}" in r.summary

            # A rerun from scratch (checkpoint removed) finds every content hash cached: nothing rewritten.
            checkpoint_path(src).unlink()
            rep3 = await backfill(s, src, summarizer=summ, batch_size=50, progress=False)
            assert rep3.written == 0 and rep3.unchanged == 23 and rep3.invalid == 1
            assert await cache.get_many(ids) == got
        finally:
            await cache.close()

    async def test_backfill_applies_updates_and_tombstones_in_file_order(
        self, summarizer_settings: Callable[..., SummarizerSettings], tmp_path: Path
    ) -> None:
        s = summarizer_settings()
        a, b = (f"{s.group_id}-a", f"{s.group_id}-b")
        rows = [
            {"job_id": a, "title": "Electrician", "description": "Wiring."},
            {"job_id": b, "title": "Nurse", "description": "Patient care."},
            {"job_id": a, "title": "Senior Electrician", "description": "Industrial wiring."},
            {"job_id": b, "deleted": True},
        ]
        src = tmp_path / "c.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
        cache = SummaryCache.from_url(s.redis_url, s.summarizer_version)
        try:
            rep = await backfill(s, src, summarizer=ExtractiveSummarizer(128), batch_size=2, progress=False)
            assert rep.rows == 4 and rep.deleted == 1
            ra, rb = await cache.get_many([a, b])
            assert isinstance(ra, SummaryRecord) and "Senior Electrician" in ra.summary and rb is None
        finally:
            await cache.close()

    def test_checkpoint_for_another_version_is_refused(
        self, summarizer_settings: Callable[..., SummarizerSettings], tmp_path: Path
    ) -> None:
        src = tmp_path / "c.jsonl"
        src.write_text('{"job_id": "x", "title": "T"}\n')
        checkpoint_path(src).write_text(json.dumps({"source": str(src.resolve()), "version": "other", "rows_done": 1}))
        with pytest.raises(ValueError, match="belongs to"):
            asyncio.run(backfill(summarizer_settings(), src, summarizer=ExtractiveSummarizer(128), progress=False))

    def test_parquet_without_pyarrow_says_so(self, tmp_path: Path) -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            with pytest.raises(RuntimeError, match="pyarrow"):
                list(iter_rows(tmp_path / "c.parquet", 0))
            return
        pytest.skip("pyarrow is installed here")

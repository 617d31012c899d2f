"""Backfill of an existing corpus into the real Redis summary cache: batched, resumable, invalid rows."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def _write_corpus(path: Path, rows: list[dict[str, Any]]) -> None:
    """The same rows as JSONL (one object per line) or as a Parquet table, by the file's suffix."""
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        # Every column of any row (from_pylist would take the columns of the first row only); absent = null.
        columns = list(dict.fromkeys(k for r in rows for k in r))
        pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in columns} for r in rows]), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _posting_rows(items: list[JobPosted], bad_row_at: int) -> list[dict[str, Any]]:
    rows = []
    for p in items:
        row = json.loads(msgspec.json.encode(p))
        row.pop("schema")  # rows from a corpus dump need not carry the wire tag
        rows.append(row)
    # Type-consistent with the other rows (Parquet needs one type per column) but invalid: a bad job id.
    rows.insert(bad_row_at, {"job_id": "has space", "title": "No id"})
    return rows


FORMATS = ["jsonl", "parquet"]


class TestBackfill:
    @pytest.mark.parametrize("fmt", FORMATS)
    async def test_backfill_interrupted_then_resumed_writes_every_posting_once(
        self, fmt: str, summarizer_settings: Callable[..., SummarizerSettings], tmp_path: Path
    ) -> None:
        s = summarizer_settings(store_raw=True, raw_max_chars=100)
        items = postings(23, seed=31, paragraphs=4, prefix=f"{s.group_id}-job")
        src = tmp_path / f"corpus.{fmt}"
        _write_corpus(src, _posting_rows(items, bad_row_at=5))
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

    @pytest.mark.parametrize("fmt", FORMATS)
    async def test_backfill_applies_updates_and_tombstones_in_file_order(
        self, fmt: str, summarizer_settings: Callable[..., SummarizerSettings], tmp_path: Path
    ) -> None:
        s = summarizer_settings()
        a, b = (f"{s.group_id}-a", f"{s.group_id}-b")
        rows = [
            {"job_id": a, "title": "Electrician", "description": "Wiring."},
            {"job_id": b, "title": "Nurse", "description": "Patient care."},
            {"job_id": a, "title": "Senior Electrician", "description": "Industrial wiring."},
            {"job_id": b, "deleted": True},
        ]
        src = tmp_path / f"c.{fmt}"
        _write_corpus(src, rows)
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

    def test_parquet_without_pyarrow_says_so(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        # pyarrow is installed (the dev extra): hide it from the importer to check the message users get.
        monkeypatch.setitem(sys.modules, "pyarrow", None)
        monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
        with pytest.raises(RuntimeError, match="pyarrow"):
            list(iter_rows(tmp_path / "c.parquet", 0))

"""Backfill: summarize an existing corpus (JSONL, or Parquet when pyarrow is importable) straight into
the Redis summary cache, without going through Kafka.

- Rows are `JobPosted` fields (``job_id``, ``title``, ``company``, ``location``, ``description``,
  optionally ``deleted``); the ``schema`` tag may be omitted. An invalid row is reported and skipped.
- Batched: rows are read, summarized and written ``batch_size`` at a time (one Redis pipeline each).
  Postings whose content hash is already cached are skipped, as in the service.
- Resumable: after each batch is durable in Redis, a checkpoint file records the number of input rows
  done (written atomically). A rerun starts after that row; a finished run leaves ``done: true``.
- Ctrl-C / SIGTERM: the batch in flight is finished, written and checkpointed, then it exits (130).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from jobscore.cache import SummaryCache
from jobscore.settings import SummarizerSettings
from schemas import JobPosted, posting_from_row
from summarizer.modes import PostingSummarizer, make_summarizer
from summarizer.writer import SummaryWriter

log = logging.getLogger(__name__)


@dataclass
class BackfillReport:
    rows: int = 0  # input rows consumed in this run (valid or not)
    written: int = 0
    unchanged: int = 0
    deleted: int = 0
    invalid: int = 0
    failed: int = 0
    resumed_from: int = 0
    interrupted: bool = False
    errors: list[str] = field(default_factory=list)  # the first few, for the operator


def checkpoint_path(source: Path) -> Path:
    return source.with_name(source.name + ".checkpoint.json")


def read_checkpoint(path: Path, source: Path, version: str) -> int:
    """Rows already done for this source and cache version (0 when there is no usable checkpoint)."""
    if not path.exists():
        return 0
    doc = json.loads(path.read_text())
    if doc.get("source") != str(source.resolve()) or doc.get("version") != version:
        raise ValueError(
            f"checkpoint {path} belongs to {doc.get('source')} / version {doc.get('version')}, not "
            f"{source.resolve()} / {version}; delete it or pass another --checkpoint"
        )
    return int(doc.get("rows_done", 0))


def write_checkpoint(path: Path, source: Path, version: str, rows_done: int, done: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps({"source": str(source.resolve()), "version": version, "rows_done": rows_done, "done": done})
    )
    os.replace(tmp, path)  # atomic: a crash leaves the old or the new checkpoint, never half of one


def iter_rows(source: Path, skip: int) -> Iterator[tuple[int, JobPosted | str]]:
    """(row number from 1, posting or error text), starting after ``skip`` rows."""
    if source.suffix.lower() in (".parquet", ".pq"):
        yield from _iter_parquet(source, skip)
        return
    with source.open("rb") as fh:
        n = 0
        for line in fh:
            if not line.strip():
                continue
            n += 1
            if n <= skip:
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("a row must be a JSON object")
                yield n, posting_from_row(row)
            except (ValueError, msgspec.ValidationError) as e:
                yield n, f"{source}:{n}: {e}"


def _iter_parquet(source: Path, skip: int) -> Iterator[tuple[int, JobPosted | str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise RuntimeError(
            "Parquet input needs pyarrow, which is not installed in this environment; install pyarrow or "
            "convert the file to JSONL (one JobPosted object per line)"
        ) from None
    n = 0
    for batch in pq.ParquetFile(source).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            n += 1
            if n <= skip:
                continue
            try:
                yield n, posting_from_row({k: v for k, v in row.items() if v is not None})
            except (ValueError, msgspec.ValidationError) as e:
                yield n, f"{source}:{n}: {e}"


def count_rows(source: Path) -> int | None:
    """Total rows for the progress bar (a quick line count; None for Parquet without pyarrow)."""
    if source.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(source).metadata.num_rows)
        except ImportError:
            return None
    with source.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


async def backfill(
    settings: SummarizerSettings,
    source: Path,
    *,
    summarizer: PostingSummarizer | None = None,
    batch_size: int = 64,
    checkpoint: Path | None = None,
    stop: asyncio.Event | None = None,
    progress: bool = True,
) -> BackfillReport:
    """Summarize ``source`` into the cache of ``settings.summarizer_version``; see the module docstring."""
    ckpt = checkpoint or checkpoint_path(source)
    version = settings.summarizer_version
    report = BackfillReport(resumed_from=read_checkpoint(ckpt, source, version))
    own = summarizer is None
    summ = summarizer or await asyncio.to_thread(make_summarizer, settings)
    cache = SummaryCache.from_url(settings.redis_url, version, settings.summary_ttl_s)
    writer = SummaryWriter(
        summ,
        cache,
        chunk_size=batch_size,
        raw_max_chars=settings.raw_max_chars if settings.store_raw else None,
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=count_rows(source), initial=report.resumed_from, unit="posting", desc="backfill")
    rows_done = report.resumed_from
    try:
        rows = iter_rows(source, report.resumed_from)
        while True:
            if stop is not None and stop.is_set():
                report.interrupted = True
                break
            chunk = await asyncio.to_thread(_take, rows, batch_size)
            if not chunk:
                break
            await _backfill_batch(chunk, writer, report)
            rows_done = chunk[-1][0]
            report.rows += len(chunk)
            # Only after the batch is in Redis: a crash before this line redoes the batch (idempotent).
            write_checkpoint(ckpt, source, version, rows_done, done=False)
            if bar is not None:
                bar.update(len(chunk))
        if not report.interrupted:
            write_checkpoint(ckpt, source, version, rows_done, done=True)
    finally:
        if bar is not None:
            bar.close()
        await cache.close()
        if own:
            summ.close()
    log.info("backfill finished" if not report.interrupted else "backfill interrupted", extra=vars(report))
    return report


def _take(rows: Iterator[tuple[int, JobPosted | str]], n: int) -> list[tuple[int, JobPosted | str]]:
    out = []
    for item in rows:
        out.append(item)
        if len(out) >= n:
            break
    return out


async def _backfill_batch(
    chunk: list[tuple[int, JobPosted | str]], writer: SummaryWriter, report: BackfillReport
) -> None:
    items: list[tuple[int, JobPosted]] = []
    for row, item in chunk:
        if isinstance(item, str):
            report.invalid += 1
            if len(report.errors) < 20:
                report.errors.append(item)
            log.warning("invalid row skipped", extra={"error": item})
            continue
        items.append((row, item))
    result = await writer.write_batch(items)
    report.unchanged += result.unchanged
    report.failed += len(result.failures)
    for f in result.failures:
        if len(report.errors) < 20:
            report.errors.append(f"{f.posting.job_id}: {f.reason}")
    report.written += len(result.written)
    report.deleted += len(result.deleted)

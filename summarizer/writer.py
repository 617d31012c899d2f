"""One batch of postings → summaries in Redis: the step the service and the backfill share.

Per batch: fold the postings in order (a later record for a job wins; a tombstone removes it) → skip
jobs whose cached entry already has the same content hash → summarize the rest off the event loop, in
chunks → one pipelined Redis write of puts and deletes. Summarizer failures are returned per posting
with their source (a Kafka record, a file row) so the caller can dead-letter or report them; the rest
of the batch is written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from jobscore import metrics
from jobscore.cache import SummaryCache
from schemas import JobPosted
from schemas.summary import SummaryRecord, content_hash
from summarizer.extractive import Extracted, summarize
from summarizer.modes import PostingSummarizer

log = logging.getLogger(__name__)

S = TypeVar("S")  # where a posting came from: a ConsumerRecord, a row number


@dataclass(frozen=True)
class Failure(Generic[S]):
    source: S
    posting: JobPosted
    error: Exception

    @property
    def reason(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"


@dataclass
class WriteResult(Generic[S]):
    written: list[SummaryRecord] = field(default_factory=list)
    unchanged: int = 0
    # (job id, content hash) of the postings whose content was summarized already (nothing written)
    unchanged_ids: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failures: list[Failure[S]] = field(default_factory=list)


def build_records(postings: Sequence[JobPosted], version: str, budget: int) -> list[SummaryRecord]:
    """Keyword-extractive records without any model (seeding caches in tests and demos)."""
    now = time.time()
    return [_record(p, summarize(p, budget), version, "extractive", now) for p in postings]


def _record(
    p: JobPosted, ex: Extracted, version: str, mode: str, now: float, raw_max_chars: int | None = None
) -> SummaryRecord:
    return SummaryRecord(
        job_id=p.job_id,
        version=version,
        mode=mode,
        summary=ex.summary,
        content_hash=content_hash(p),
        raw_tokens=ex.raw_tokens,
        summary_tokens=ex.summary_tokens,
        created_at=now,
        title=p.title,
        raw=p.description[:raw_max_chars] if raw_max_chars else None,
    )


def summarize_records(
    postings: Sequence[JobPosted],
    summarizer: PostingSummarizer,
    version: str,
    raw_max_chars: int | None = None,
) -> list[SummaryRecord | Exception]:
    """Summarize and wrap into cache records; one result per posting, an exception where it failed.

    A failing batch is retried one posting at a time so a single bad posting cannot block its
    partition: it is reported (and dead-lettered by the caller) while the others go through.
    """
    try:
        extracted: list[Extracted | Exception] = list(summarizer.summarize_batch(postings))
    except Exception:
        log.exception("summarizer batch failed; retrying one posting at a time")
        extracted = []
        for p in postings:
            try:
                extracted.append(summarizer.summarize_batch([p])[0])
            except Exception as e:
                extracted.append(e)
    now = time.time()
    return [
        ex if isinstance(ex, Exception) else _record(p, ex, version, summarizer.mode, now, raw_max_chars)
        for p, ex in zip(postings, extracted, strict=True)
    ]


class SummaryWriter:
    def __init__(
        self,
        summarizer: PostingSummarizer,
        cache: SummaryCache,
        *,
        chunk_size: int,
        raw_max_chars: int | None = None,
    ) -> None:
        self.summarizer = summarizer
        self.cache = cache
        self.chunk_size = chunk_size
        self.raw_max_chars = raw_max_chars

    async def write_batch(self, items: Sequence[tuple[S, JobPosted]]) -> WriteResult[S]:
        """Summarize and store one batch of (source, posting), in order; see the module docstring."""
        latest: dict[str, tuple[S, JobPosted]] = {}
        tombstones: set[str] = set()
        for source, posting in items:
            if posting.deleted:
                tombstones.add(posting.job_id)
                latest.pop(posting.job_id, None)
            else:
                tombstones.discard(posting.job_id)
                latest[posting.job_id] = (source, posting)
        cached = await self.cache.hashes(list(latest))
        fresh = [sp for sp, h in zip(latest.values(), cached, strict=True) if h != content_hash(sp[1])]
        same = [
            (j, h) for j, h in zip(latest, cached, strict=True) if h is not None and h == content_hash(latest[j][1])
        ]
        out: WriteResult[S] = WriteResult(
            unchanged=len(latest) - len(fresh), unchanged_ids=same, deleted=sorted(tombstones)
        )
        mode = self.summarizer.mode
        # Chunks bound the time between event-loop turns and the memory of one summarizer call.
        for i in range(0, len(fresh), self.chunk_size):
            chunk = fresh[i : i + self.chunk_size]
            t0 = time.perf_counter()
            results = await asyncio.to_thread(
                summarize_records, [p for _, p in chunk], self.summarizer, self.cache.version, self.raw_max_chars
            )
            metrics.SUMMARIZE_SECONDS.labels(mode).observe(time.perf_counter() - t0)
            for (source, posting), r in zip(chunk, results, strict=True):
                if isinstance(r, SummaryRecord):
                    out.written.append(r)
                else:
                    out.failures.append(Failure(source, posting, r))
                    metrics.SUMMARIZE_FAILURES.labels(mode).inc()
        await self.cache.write(out.written, out.deleted)
        for r in out.written:
            metrics.SUMMARY_COMPRESSION.observe(r.raw_tokens / max(1, r.summary_tokens))
            metrics.SUMMARY_TOKENS.labels(r.mode).observe(r.summary_tokens)
        metrics.CACHE_WRITES.labels("put").inc(len(out.written))
        metrics.CACHE_WRITES.labels("delete").inc(len(out.deleted))
        return out

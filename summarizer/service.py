"""The summarizer service: postings topic → summaries in Redis.

Data path, per poll: fetch a batch of postings → decode (bad ones to the dead-letter topic) → skip
postings whose content hash is already cached → summarize off the event loop → one pipelined Redis
write (puts and tombstone deletes) → one `job_summarized.v1` per posting now scorable on the summaries topic
(the readiness signal clients wait on) → wait for those and the dead letters to be acked → check the broker
still has our topics → commit offsets. A crash anywhere before the commit replays the batch; every write is idempotent
(same key, same value). A broker that lost our topics (one restarted empty acknowledges dead letters into a
topic it no longer has) gets no commit: the service stops with `BrokerLost`, not ready, and the group replays.

The mode (`summarizer_mode`: extractive, hybrid, abstractive; see `summarizer.modes`) is loaded once at
start and recorded in every entry. A posting the summarizer fails on is dead-lettered with the error
(``summarize_failed``) so it cannot block its partition; the rest of its batch is written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from jobscore import metrics
from jobscore.cache import CacheUnavailable, SummaryCache
from jobscore.health import HEALTH
from jobscore.kafka import BrokerLost, dead_letter, topic_name
from jobscore.service import Committed, Shell, ShellService, run_service
from jobscore.settings import SummarizerSettings
from schemas import DEAD_LETTERS, POSTINGS, SUMMARIES, DeadLetter, JobPosted, JobSummarized, SchemaError
from schemas.deadletters import dead_letter_record
from schemas.headers import message_headers
from summarizer.modes import PostingSummarizer, make_summarizer
from summarizer.writer import SummaryWriter, WriteResult

log = logging.getLogger(__name__)


class Summarizer(ShellService):
    stop_reason = "stopping: finishing the batch in flight"

    def __init__(self, settings: SummarizerSettings, summarizer: PostingSummarizer | None = None) -> None:
        """``summarizer``: an already loaded mode implementation to share (tests, restarts in one
        process); by default the one `settings.summarizer_mode` names is loaded in `start()`."""
        self.settings = settings
        self.summarizer = summarizer
        self._owns_summarizer = summarizer is None
        self.cache = SummaryCache.for_service(settings, settings.summarizer_version, settings.summary_ttl_s)
        self.writer: SummaryWriter | None = None
        # Topics, producer, broker-loss guard, group consumer, probes, guarded commit, stop and close.
        self.shell = Shell(
            settings,
            service="summarizer",
            cache=self.cache,
            group_id=settings.group_id,
            reads=[topic_name(settings, POSTINGS)],
            guards=[
                topic_name(settings, DEAD_LETTERS),
                topic_name(settings, POSTINGS),
                topic_name(settings, SUMMARIES),
            ],
        )
        self._stop = self.shell.stopping
        self.postings_done = 0

    async def start(self) -> None:
        s = self.settings
        self.shell.reset_health(
            {"summarizer": (False, f"loading the {s.summarizer_mode} summarizer")},
            summarizer_version=s.summarizer_version,
            engine=s.summarizer_mode,
        )
        if self.summarizer is None:
            # Model loading blocks for seconds (vLLM: ~a minute on CPU): keep the loop responsive.
            self.summarizer = await asyncio.to_thread(make_summarizer, s)
        if self.summarizer.mode != s.summarizer_mode:
            raise ValueError(
                f"summarizer mode {self.summarizer.mode!r} given, but settings say {s.summarizer_mode!r}; "
                "cache entries record the mode, so they must agree"
            )
        self.writer = SummaryWriter(
            self.summarizer,
            self.cache,
            chunk_size=s.summarize_batch_size,
            raw_max_chars=s.raw_max_chars if s.store_raw else None,
        )
        await self.shell.start()
        HEALTH.set("summarizer", True)
        log.info("summarizer started", extra={"settings": s.non_defaults()})

    async def close(self) -> None:
        await self.shell.close()
        await self.cache.close()
        if self._owns_summarizer and self.summarizer is not None:
            self.summarizer.close()
            self.summarizer = None

    async def run(self) -> None:
        assert self.consumer is not None and self.summarizer is not None, "start() first"
        s = self.settings
        # Backpressure is the loop itself: nothing is fetched while a batch is summarized, and the
        # consumer's prefetch is bounded by its fetch sizes. What must be bounded is the time per batch:
        # it has to stay under max_poll_interval_ms (300 s) or the group evicts this consumer and the
        # commit fails. Abstractive summaries take ~1-3 s each on CPU, so it polls one chunk at a time.
        max_records = s.max_records
        if self.summarizer.mode == "abstractive":
            max_records = min(s.max_records, s.summarize_batch_size)
        while not self._stop.is_set():
            HEALTH.beat()
            try:
                await self.shell.check_topics_if_due()  # not only before commits: an idle summarizer too
            except BrokerLost as e:
                HEALTH.set("broker", False, str(e))
                raise
            batch = await self.shell.fetching(self.consumer.getmany(timeout_ms=200, max_records=max_records))
            await metrics.observe_lag(self.consumer, s.group_id)
            if batch:
                await self.process(batch)

    async def process(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        assert self.consumer is not None and self.producer is not None and self.writer is not None
        s = self.settings
        items: list[tuple[ConsumerRecord, JobPosted]] = []
        dlq_sends = []
        for records in batch.values():
            for rec in records:
                try:
                    items.append((rec, POSTINGS.decode(rec.value)))
                except SchemaError as e:
                    log.warning(
                        "bad posting to dead letters",
                        extra={
                            "topic": rec.topic,
                            "partition": rec.partition,
                            "offset": rec.offset,
                            "reason": e.reason,
                        },
                    )
                    metrics.DEAD_LETTERS.labels("summarizer", e.kind).inc()
                    metrics.POSTINGS_PROCESSED.labels("dead_letter").inc()
                    dl = dead_letter(rec, "summarizer", e.reason, e.kind, s.dead_letter_max_original_bytes)
                    dlq_sends.append(await self._send_dead_letter(dl, rec))
        result = await self._write(items)
        if result is None:  # stopping during a Redis outage: nothing committed, the batch is replayed
            return
        for f in result.failures:
            rec = f.source
            reason = f"summarizer ({self.writer.summarizer.mode}) failed: {f.reason}"[:2000]
            log.warning(
                "posting could not be summarized: to dead letters",
                extra={"job_id": f.posting.job_id, "partition": rec.partition, "offset": rec.offset, "reason": reason},
            )
            metrics.DEAD_LETTERS.labels("summarizer", "summarize_failed").inc()
            dl = dead_letter(rec, "summarizer", reason, "summarize_failed", s.dead_letter_max_original_bytes)
            dlq_sends.append(await self._send_dead_letter(dl, rec))
        ready_sends = await self._announce(result)
        metrics.POSTINGS_PROCESSED.labels("summarized").inc(len(result.written))
        metrics.POSTINGS_PROCESSED.labels("unchanged").inc(result.unchanged)
        metrics.POSTINGS_PROCESSED.labels("deleted").inc(len(result.deleted))
        metrics.POSTINGS_PROCESSED.labels("failed").inc(len(result.failures))
        if dlq_sends or ready_sends:
            await asyncio.gather(*dlq_sends, *ready_sends)
        # Summaries (and dead letters) are acknowledged; the offsets may move past them only if the broker
        # that acknowledged the dead letters still has their topic (and the postings topic) now. A postponed
        # commit leaves the batch to be replayed if nothing later commits past it; after a rebalance its new
        # owner replays it — every write is idempotent (same key, same value), so only work is repeated.
        try:
            outcome = await self.shell.commit({tp: recs[-1].offset + 1 for tp, recs in batch.items()})
        except BrokerLost as e:
            HEALTH.set("broker", False, str(e))
            # The command logs the one ERROR line with its exit code (app/commands.py `service_failed`).
            log.warning("the broker lost our topics: stopping without committing", extra={"error": str(e)})
            raise
        if outcome is not Committed.DONE:
            return
        self.postings_done += sum(len(r) for r in batch.values())
        log.debug(
            "postings batch done",
            extra={
                "summarized": len(result.written),
                "unchanged": result.unchanged,
                "deleted": len(result.deleted),
                "failed": len(result.failures),
                "dead_letters": len(dlq_sends),
            },
        )

    async def _send_dead_letter(self, dl: DeadLetter, rec: ConsumerRecord) -> asyncio.Future[Any]:
        """Send a dead letter in Kafka Connect's convention (schemas/deadletters.py); the caller awaits its ack."""
        assert self.producer is not None
        key, value, headers = dead_letter_record(dl, rec.headers)
        return await self.producer.send(topic_name(self.settings, DEAD_LETTERS), value, key=key, headers=headers)

    async def _announce(self, result: WriteResult[ConsumerRecord]) -> list[asyncio.Future[Any]]:
        """One `job_summarized.v1` per posting now scorable (written, or its content summarized already) and
        per withdrawn one, on the compacted summaries topic: the readiness signal clients wait on. Sent before
        the commit (the caller awaits the acknowledgements), so an event is never lost after its posting's
        offset moved; a replay repeats it, which compaction and readers tolerate."""
        assert self.producer is not None
        s = self.settings
        topic = topic_name(s, SUMMARIES)
        now = time.time()
        events = [
            JobSummarized(
                job_id=r.job_id,
                content_hash=r.content_hash,
                summarizer_version=r.version,
                mode=r.mode,
                summarized_at=r.created_at,
            )
            for r in result.written
        ]
        mode = self.summarizer.mode if self.summarizer is not None else None
        events += [
            JobSummarized(
                job_id=j, content_hash=h, summarizer_version=s.summarizer_version, mode=mode, summarized_at=now
            )
            for j, h in result.unchanged_ids
        ]
        events += [
            JobSummarized(job_id=j, summarizer_version=s.summarizer_version, summarized_at=now, deleted=True)
            for j in result.deleted
        ]
        headers = message_headers(str(JobSummarized.__struct_config__.tag))
        return [
            await self.producer.send(topic, SUMMARIES.encode(e), key=e.job_id.encode(), headers=headers) for e in events
        ]

    async def _write(self, items: list[tuple[ConsumerRecord, JobPosted]]) -> WriteResult[ConsumerRecord] | None:
        """Summarize and write the batch. Redis outage policy: retry until Redis is back (not ready meanwhile,
        logged once by the cache); None when asked to stop first (then nothing is committed). Never exits."""
        assert self.writer is not None
        while True:
            try:
                return await self.writer.write_batch(items)
            except CacheUnavailable:
                pass  # not ready meanwhile (the cache logged the outage once)
            if self._stop.is_set():
                log.warning("stopping during a Redis outage: the batch is left uncommitted", extra={"n": len(items)})
                return None
            await self.shell.wait_for_redis()


async def run_summarizer(settings: SummarizerSettings, stop: asyncio.Event | None = None) -> None:
    """Run a summarizer until ``stop`` (jobscore/service.py `run_service`: a stop during start-up abandons it)."""
    svc = Summarizer(settings)
    await run_service(svc, stop, "summarizer", lambda: {"postings": svc.postings_done})

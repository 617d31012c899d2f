"""The scoring worker's data path — the only code that commits request offsets.

One iteration, top to bottom:

    consume      getmany() a batch of ScoreRequests across the assigned partitions
    validate     undecodable/invalid → dead-letter topic; over deployment limits → "rejected" ranking;
                 past deadline → "timeout" ranking (never scored late)
    fetch        one Redis MGET for every candidate of every request in the batch
    score        all query–summary prompts of the batch in one engine call, in a thread (the event
                 loop keeps heartbeating); query first so the engine reuses each request's prefix
    rank         per request: sort, keep top_k, report candidates that could not be scored
    publish      send every ranking and dead letter (acks=all) and wait for all acknowledgements
    commit       only then, each partition's offset moves past the batch

A failure before the commit (engine dead, broker unreachable) skips the commit and raises: the process
exits and its partitions are replayed by the next owner. Rankings are keyed by request id; a replay
republishes the same ranking, which consumers deduplicate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from jobscore import metrics
from jobscore.kafka import dead_letter, ensure_topics, make_consumer, make_producer, topic_name
from jobscore.settings import WorkerSettings
from schemas import DEAD_LETTERS, RANKINGS, SCORE_REQUESTS, CandidateError, Ranking, SchemaError, ScoreRequest
from schemas.messages import Timings
from summarizer.cache import InvalidSummary, SummaryCache
from worker.engine import ScoringEngine, is_probability
from worker.prompts import DEFAULT_INSTRUCTION, PromptTemplate
from worker.rank import rank

log = logging.getLogger(__name__)


class EngineFailure(RuntimeError):
    """The engine could not score anything: the worker must not commit and should exit."""


@dataclass
class _Pending:
    """One valid request of the current batch and what has been gathered for it."""

    req: ScoreRequest
    received_at: float
    job_ids: list[str] = field(default_factory=list)  # candidates with a prompt, in prompt order
    first: int = 0  # index of its first prompt in the batch
    errors: list[CandidateError] = field(default_factory=list)
    candidates_total: int = 0


class _DrainOnRevoke(ConsumerRebalanceListener):
    """Let the in-flight batch finish (publish + commit) before partitions are handed to another worker."""

    def __init__(self, lock: asyncio.Lock) -> None:
        self.lock = lock

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.lock:
            log.info(
                "partitions revoked", extra={"partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked)}
            )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned", extra={"partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)})


class Worker:
    def __init__(self, settings: WorkerSettings, engine: ScoringEngine, template: PromptTemplate | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.template = template or PromptTemplate.qwen3_reranker(settings.instruction or DEFAULT_INSTRUCTION)
        self.cache = SummaryCache.from_url(settings.redis_url, settings.summarizer_version)
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._results_topic = topic_name(settings, RANKINGS)
        self._dlq_topic = topic_name(settings, DEAD_LETTERS)
        self._stop = asyncio.Event()
        self._processing = asyncio.Lock()
        self.requests_done = 0
        self.items_scored = 0

    async def start(self) -> None:
        s = self.settings
        await ensure_topics(s)
        self.producer = make_producer(s)
        await self.producer.start()
        self.consumer = make_consumer(s, s.group_id)
        self.consumer.subscribe([topic_name(s, SCORE_REQUESTS)], listener=_DrainOnRevoke(self._processing))
        await self.consumer.start()
        log.info(
            "worker started",
            extra={
                "model": self.engine.info.model_id,
                "revision": self.engine.info.revision,
                "settings": s.non_defaults(),
            },
        )

    def stop(self) -> None:
        """Finish the batch in flight, commit it, then leave the loop."""
        self._stop.set()

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None
        await self.cache.close()

    async def run(self) -> None:
        assert self.consumer is not None, "start() first"
        s = self.settings
        while not self._stop.is_set():
            metrics.LAST_LOOP.set_to_current_time()
            batch = await self.consumer.getmany(timeout_ms=s.poll_timeout_ms, max_records=s.max_records)
            if batch:
                async with self._processing:
                    await self.process(batch)

    # --- the data path -----------------------------------------------------------------------------

    async def process(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        assert self.consumer is not None and self.producer is not None
        now = time.time()
        outbox: list[tuple[str, bytes, bytes | None]] = []  # (topic, value, key)
        pending: list[_Pending] = []

        # validate
        for records in batch.values():
            for rec in records:
                verdict = self._validate(rec, now)
                if isinstance(verdict, ScoreRequest):
                    pending.append(_Pending(verdict, now))
                else:
                    outbox.extend(verdict)

        # fetch: one MGET for the whole batch
        t_fetch = time.perf_counter()
        unique_ids = list(dict.fromkeys(j for p in pending for j in p.req.candidates))
        summaries = dict(zip(unique_ids, await self.cache.get_many(unique_ids), strict=True))
        fetch_ms = (time.perf_counter() - t_fetch) * 1e3

        # build prompts (query first, candidate last)
        prompts: list[str] = []
        for p in pending:
            shared = self.template.shared(p.req.query)
            candidates = list(dict.fromkeys(p.req.candidates))
            p.candidates_total = len(candidates)
            p.first = len(prompts)
            for job_id in candidates:
                rec = summaries[job_id]
                if rec is None:
                    p.errors.append(
                        CandidateError(
                            job_id=job_id,
                            reason="missing_summary",
                            detail=f"no summary for version {self.settings.summarizer_version}",
                        )
                    )
                elif isinstance(rec, InvalidSummary):
                    p.errors.append(CandidateError(job_id=job_id, reason="invalid_summary", detail=str(rec)))
                elif len(rec.summary) > self.settings.max_summary_chars:
                    p.errors.append(
                        CandidateError(
                            job_id=job_id,
                            reason="oversized",
                            detail=f"{len(rec.summary)} chars > {self.settings.max_summary_chars}",
                        )
                    )
                else:
                    p.job_ids.append(job_id)
                    prompts.append(shared + self.template.candidate(rec.summary))

        # score
        t_score = time.perf_counter()
        scores = await asyncio.to_thread(self._score, prompts) if prompts else []
        score_ms = (time.perf_counter() - t_score) * 1e3
        if prompts:
            metrics.BATCH_SIZE.observe(len(prompts))
            metrics.ENGINE_SECONDS.observe(score_ms / 1e3)
            metrics.ITEMS_SCORED.inc(sum(s is not None for s in scores))

        # rank
        info = self.engine.info
        for p in pending:
            ids, vals = [], []
            for j, job_id in enumerate(p.job_ids):
                sc = scores[p.first + j]
                if sc is None:
                    p.errors.append(
                        CandidateError(job_id=job_id, reason="engine_error", detail="the engine rejected this prompt")
                    )
                else:
                    ids.append(job_id)
                    vals.append(sc)
            done = time.time()
            timings = Timings(
                queue_ms=max(0.0, (p.received_at - p.req.created_at) * 1e3) if p.req.created_at else 0.0,
                fetch_ms=fetch_ms,
                score_ms=score_ms,
                total_ms=max(0.0, (done - (p.req.created_at or p.received_at)) * 1e3),
            )
            ranking = rank(
                p.req.request_id,
                ids,
                vals,
                p.req.top_k,
                errors=p.errors,
                candidates_total=p.candidates_total,
                model_id=info.model_id,
                model_revision=info.revision,
                summarizer_version=self.settings.summarizer_version,
                timings=timings,
                produced_at=done,
            )
            for e in p.errors:
                metrics.CANDIDATE_ERRORS.labels(e.reason).inc()
            metrics.REQUESTS.labels("ok").inc()
            if p.req.created_at:
                metrics.REQUEST_LATENCY.observe(timings.total_ms / 1e3)
            outbox.append(
                (p.req.reply_topic or self._results_topic, RANKINGS.encode(ranking), p.req.request_id.encode())
            )

        # publish, then commit
        await self._publish(outbox)
        await self.consumer.commit({tp: recs[-1].offset + 1 for tp, recs in batch.items()})
        self.requests_done += len(pending)
        self.items_scored += len(prompts)

    def _validate(self, rec: ConsumerRecord, now: float) -> ScoreRequest | list[tuple[str, bytes, bytes | None]]:
        """A request to score, or the messages that answer it (dead letter and/or a ranking) right away."""
        try:
            req = SCORE_REQUESTS.decode(rec.value)
        except SchemaError as e:
            log.warning(
                "bad request to dead letters",
                extra={"topic": rec.topic, "partition": rec.partition, "offset": rec.offset, "reason": e.reason},
            )
            metrics.DEAD_LETTERS.labels("worker", e.kind).inc()
            return [(self._dlq_topic, DEAD_LETTERS.encode(dead_letter(rec, "worker", e.reason, e.kind)), rec.key)]
        answer = self._results_topic if req.reply_topic is None else req.reply_topic
        if len(req.candidates) > self.settings.max_candidates:
            reason = (
                f"{len(req.candidates)} candidates exceeds this deployment's max_candidates="
                f"{self.settings.max_candidates}; split the request"
            )
            log.warning("request rejected", extra={"request_id": req.request_id, "reason": reason})
            metrics.REQUESTS.labels("rejected").inc()
            metrics.DEAD_LETTERS.labels("worker", "oversized").inc()
            rejected = self._bare_ranking(req, "rejected", reason, now)
            return [
                (answer, RANKINGS.encode(rejected), req.request_id.encode()),
                (self._dlq_topic, DEAD_LETTERS.encode(dead_letter(rec, "worker", reason, "oversized")), rec.key),
            ]
        if req.deadline is not None and now > req.deadline:
            reason = f"deadline passed {now - req.deadline:.3f}s before scoring started"
            log.info("request timed out", extra={"request_id": req.request_id, "reason": reason})
            metrics.REQUESTS.labels("timeout").inc()
            return [(answer, RANKINGS.encode(self._bare_ranking(req, "timeout", reason, now)), req.request_id.encode())]
        return req

    def _bare_ranking(self, req: ScoreRequest, status: str, detail: str, now: float) -> Ranking:
        return Ranking(
            request_id=req.request_id,
            status=status,
            detail=detail,  # type: ignore[arg-type]
            candidates_total=len(req.candidates),
            model_id=self.engine.info.model_id,
            model_revision=self.engine.info.revision,
            summarizer_version=self.settings.summarizer_version,
            produced_at=now,
        )

    def _score(self, prompts: Sequence[str]) -> list[float | None]:
        """Score a batch; if the engine rejects it, isolate the prompts it rejects (None) by retrying singly."""
        try:
            return list(self._checked(self.engine.score(prompts)))
        except Exception as batch_error:
            if len(prompts) == 1:
                raise EngineFailure(f"engine failed: {batch_error}") from batch_error
            log.warning(
                "engine rejected a batch; retrying its prompts one by one",
                extra={"size": len(prompts), "error": repr(batch_error)},
            )
        out: list[float | None] = []
        for prompt in prompts:
            try:
                out.append(self._checked(self.engine.score([prompt]))[0])
            except Exception:
                out.append(None)
        if all(s is None for s in out):
            raise EngineFailure("engine failed on every prompt of the batch") from None
        return out

    @staticmethod
    def _checked(scores: Sequence[float]) -> Sequence[float]:
        bad = [s for s in scores if not is_probability(s)]
        if bad:
            raise ValueError(f"engine returned non-probabilities: {bad[:3]}")
        return scores

    async def _publish(self, outbox: Sequence[tuple[str, bytes, bytes | None]]) -> None:
        """Send everything, then wait for every acknowledgement (a failed delivery raises here)."""
        results = await asyncio.gather(*(self._send(t, v, k) for t, v, k in outbox), return_exceptions=True)
        retry = []
        for (topic, value, key), res in zip(outbox, results, strict=True):
            if not isinstance(res, BaseException):
                continue
            # A reply topic the client named may not exist; answer on the default results topic instead
            # of failing this batch forever (a crash loop). Anything else is a broker problem: raise, and
            # the batch is not committed.
            if topic not in (self._results_topic, self._dlq_topic) and isinstance(res, KafkaError):
                log.warning(
                    "reply topic failed; answering on the results topic",
                    extra={"reply_topic": topic, "error": repr(res)},
                )
                retry.append((self._results_topic, value, key))
            else:
                raise res
        if retry:
            await asyncio.gather(*(self._send(t, v, k) for t, v, k in retry))

    async def _send(self, topic: str, value: bytes, key: bytes | None) -> None:
        assert self.producer is not None
        await (await self.producer.send(topic, value, key=key))


async def run_worker(settings: WorkerSettings, engine: ScoringEngine, stop: asyncio.Event | None = None) -> Worker:
    worker = Worker(settings, engine)
    await worker.start()

    async def forward_stop() -> None:
        assert stop is not None
        await stop.wait()
        worker.stop()

    watcher = asyncio.create_task(forward_stop()) if stop is not None else None
    try:
        await worker.run()
    finally:
        if watcher is not None:
            watcher.cancel()
        await worker.close()
        log.info("worker stopped", extra={"requests": worker.requests_done, "items": worker.items_scored})
    return worker

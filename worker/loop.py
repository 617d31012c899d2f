"""The scoring worker's data path — the only code that commits request offsets.

Two tasks share the work so the engine never waits for I/O while work is queued:

**intake** (the consumer loop), per poll:

    commit       move each partition's committed offset past its contiguous run of answered records
    backpressure pause all partitions while too much work is queued; resume below half of it
    consume      getmany() online ScoreRequests, then a few bulk ones (one poll per lane, online first)
    validate     undecodable/invalid → dead-letter topic; over deployment limits → "rejected" ranking;
                 past deadline → "timeout" ranking (never scored late)
    fetch        one Redis MGET for every candidate of every request of the poll
    tokenize     per request the shared [instruction + query] ids once; per candidate its cached summary ids
    cached?      with the score cache on: one MGET answers the pairs scored before (worker/scorecache.py)
    enqueue      one work item per candidate still to score into the token-budget batcher

**engine** (in parallel):

    batch        cut a batch across requests by token budget / item cap / max wait (worker/batching.py)
    score        one engine call per batch in a thread (the event loop keeps heartbeating, fetching,
                 publishing); vLLM holds up to engine_batches_in_flight batches at once and schedules
                 online prompts before bulk ones at every step (engine/driver.py)
    remember     with the score cache on: the batch's scores are written to it in the background
    rank         a request whose last candidate is scored is sorted, cut to top_k and published
    publish      send (acks=all); on the broker's acknowledgement the record counts as answered

At-least-once: an offset is committed only after the record's answer is acknowledged, per partition in
order. A revoked partition's in-flight requests are drained (bounded) before it is handed over; what
cannot finish is dropped uncommitted for the next owner. An engine or broker failure commits nothing
more and raises: the process exits and the group replays. Rankings are keyed by request id; replays
republish the same ranking and consumers deduplicate.

`Worker.rank_now` runs fetch → tokenize → score → rank in-process for requests given directly (no broker,
nothing committed): `jobscore score-backfill --direct`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from engine.driver import BULK_PRIORITY, ONLINE_PRIORITY
from engine.engines import ScoringEngine
from engine.factory import resolve_dtype
from engine.identity import read_identity
from engine.prompt import DEFAULT_INSTRUCTION, PromptBuilder, PromptTemplate, PromptTooLong
from jobscore import metrics
from jobscore.cache import CacheUnavailable, SummaryCache
from jobscore.health import HEALTH
from jobscore.kafka import (
    BrokerLost,
    dead_letter,
    topic_name,
)
from jobscore.service import Committed, Shell, ShellService, run_service
from jobscore.settings import WorkerSettings
from jobscore.tracing import Tracing, provider_for
from schemas import (
    DEAD_LETTERS,
    RANKINGS,
    SCORE_REQUESTS,
    SCORE_REQUESTS_BULK,
    CandidateError,
    Ranking,
    SchemaError,
    ScoreRequest,
)
from schemas.deadletters import dead_letter_record
from schemas.headers import trace_headers
from schemas.messages import DeadLetterKind, RankingStatus, Timings
from schemas.summary import SummaryRecord
from worker.batching import LANES, Lane, RecordKey, RequestState, TokenBudgetBatcher, WorkItem
from worker.candidates import Found, needs_raw, raw_entries, resolve
from worker.lanes import Lanes, Records
from worker.offsets import OffsetTracker
from worker.outbox import Outbox, Outgoing, answer_record
from worker.rank import Provenance, bare_ranking, ranking_of_scores
from worker.scorecache import ScoreCache, model_tag
from worker.scoring import EngineFailure, GuardedEngine

log = logging.getLogger(__name__)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # Any: aiokafka ships no type information
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.worker._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Joined the group (an empty assignment is still a member ready to take partitions).
        HEALTH.set("consumer_group", True)
        log.info("partitions assigned", extra={"partitions": _names(assigned)})


def _names(tps: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in tps)


class Worker(ShellService):
    stop_reason = "stopping: finishing the work in flight"

    def __init__(
        self,
        settings: WorkerSettings,
        engine: ScoringEngine,
        template: PromptTemplate | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        s = settings
        # Spans of the data path when tracing is on (jobscore/tracing.py); a given one (tests) is the caller's.
        self._owns_tracing = tracing is None
        self.tracing = tracing or (Tracing(provider_for("worker", s.tracing_exporter)) if s.tracing else Tracing.off())
        self.settings = s
        self.engine = engine
        self.template = template or PromptTemplate.qwen3_reranker(s.instruction or DEFAULT_INSTRUCTION)
        self.prompts = PromptBuilder(
            engine.tokenizer,
            self.template,
            max_model_len=min(s.max_model_len, engine.max_model_len),
            max_doc_tokens=s.max_doc_tokens,
            layout=s.prompt_layout,
        )
        # An ordinary prompt: when a prompt fails alone, scoring this tells a bad prompt from a lost engine.
        canary_doc = self.prompts.doc_ids([("jobscore-canary", "v1")], ["Software engineers build software."])[0]
        canary = self.prompts.build(self.prompts.query_ids("software engineer"), canary_doc)
        # The engine with poison isolation: a prompt it rejects becomes a candidate error (worker/scoring.py).
        self.scorer = GuardedEngine(engine, canary)
        self.cache = SummaryCache.for_service(s, s.summarizer_version)
        self.made_by = Provenance(engine.info.model_id, engine.info.revision, s.summarizer_version)
        self.raw_cache = (
            self.cache.sibling(s.raw_fallback_version or s.summarizer_version) if s.missing_summary == "raw" else None
        )
        self.score_cache = (
            ScoreCache(
                self.cache.client,
                model_tag(engine.info.model_id, engine.info.revision, resolve_dtype(s.dtype)),
                s.score_cache_ttl_s,
            )
            if s.score_cache_ttl_s > 0
            else None
        )
        self.batcher = TokenBudgetBatcher(
            s.max_batch_tokens, s.max_batch_items, s.max_wait_ms / 1e3, max_bulk_items=s.max_bulk_batch_items
        )
        self.offsets = OffsetTracker()
        self._results_topic = topic_name(s, RANKINGS)
        self._dlq_topic = topic_name(s, DEAD_LETTERS)
        self._bulk_topic = topic_name(s, SCORE_REQUESTS_BULK)
        # Topics, producer, broker-loss guard, group consumer, probes, guarded commit, stop and close.
        self.shell = Shell(
            s,
            service="worker",
            cache=self.cache,
            group_id=s.group_id,
            # Both lanes in one group: online requests, and bulk requests taken with spare capacity only.
            reads=[topic_name(s, SCORE_REQUESTS), self._bulk_topic],
            guards=[self._results_topic, self._dlq_topic],
            listener=_Rebalance(self),
        )
        self._stop = self.shell.stopping
        # Sends a record's answers with bounded retries and the reply-topic fallback (worker/outbox.py).
        self.outbox = Outbox(s, self.shell, self._results_topic, self._dlq_topic)
        self._answered = asyncio.Condition()  # notified whenever a record's answer is acknowledged
        self._publishing: set[asyncio.Task[None]] = set()
        self._failed: BaseException | None = None
        self._uncommitted: dict[TopicPartition, int] = {}  # answered, not yet committed (a postponed commit)
        # What each poll takes from which lane, and backpressure per lane (worker/lanes.py).
        self.lanes = Lanes(s, self.shell, self.batcher, self._bulk_topic)
        self.requests_done = 0
        self.items_scored = 0
        self.batches = 0
        # Wall time with at least one batch in the engine (utilisation = this / elapsed): batches overlap there.
        self._engine_busy = metrics.BusyClock()

    @property
    def engine_seconds(self) -> float:
        return self._engine_busy.total

    # --- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self.shell.reset_health(
            # constructed with a loaded engine (an engine failure flips it); ready once the group assigns
            {"engine": (True, ""), "consumer_group": (False, "joining the consumer group")},
            model_id=self.engine.info.model_id,
            model_revision=self.engine.info.revision,
            # A shipped LoRA scorer names its adapter in the model directory's identity sidecar.
            adapter_version=str((read_identity(self.engine.info.path).get("adapter") or {}).get("version", "")),
            summarizer_version=s.summarizer_version,
            engine=s.engine,
            dtype=s.dtype,
        )
        await self.shell.start()
        log.info(
            "worker started",
            extra={
                "model": self.engine.info.model_id,
                "revision": self.engine.info.revision,
                "settings": s.non_defaults(),
            },
        )

    async def close(self) -> None:
        await self.shell.close()
        if self._owns_tracing:
            self.tracing.shutdown()
        if self.score_cache is not None:  # the last batch's scores: worth a moment, not a hang
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.score_cache.flush(), self.settings.redis_timeout_s)
        await self.cache.close()

    async def run(self) -> None:
        assert self.consumer is not None, "start() first"
        s = self.settings
        engine_task = asyncio.create_task(self._engine_loop(), name="engine")
        try:
            while not self._stop.is_set() and self._failed is None:
                metrics.LAST_LOOP.set_to_current_time()
                HEALTH.beat()
                await self._commit()
                try:
                    await self.shell.check_topics_if_due()  # an idle worker notices a lost broker too
                except BrokerLost as e:
                    self._fail(e)
                    break
                self._backpressure()
                online, bulk = await self.shell.fetching(self.lanes.poll())
                await metrics.observe_lag(self.consumer, s.group_id)
                # Online records reach the batcher before the bulk ones are fetched from Redis and tokenized.
                if online:
                    await self._intake(online)
                if bulk:
                    await self._intake(bulk)
            if self._failed is None:
                await self._drain(s.drain_timeout_s)
        finally:
            self.batcher.close()
            if self._failed is not None:
                engine_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(engine_task, s.drain_timeout_s)
        if self._failed is not None:
            raise self._failed

    async def _drain(self, timeout: float) -> None:
        """Graceful stop: let queued work finish and be acknowledged, then commit it."""
        self.batcher.close()
        try:
            async with asyncio.timeout(timeout), self._answered:
                await self._answered.wait_for(lambda: self.offsets.in_flight() == 0 or self._failed is not None)
        except TimeoutError:
            log.warning(
                "drain timed out; uncommitted requests will be replayed by the next owner",
                extra={"in_flight": self.offsets.in_flight()},
            )
        if self._failed is None:
            await self._commit()

    # --- intake: consume → validate → fetch → tokenize → enqueue ---------------------------------------

    async def _intake(self, batch: Records) -> None:
        now = time.time()
        states: list[RequestState] = []
        for tp, records in batch.items():
            for rec in records:
                self.offsets.add(tp, rec.offset)
                verdict = self._validate(rec, now)
                if isinstance(verdict, ScoreRequest):
                    key = RecordKey(rec.topic, rec.partition, rec.offset)
                    lane: Lane = "bulk" if rec.topic == self._bulk_topic else "online"
                    st = RequestState(verdict, key, now, trace=trace_headers(rec.headers), lane=lane)
                    st.span = self.tracing.request(rec.headers or (), verdict.request_id, lane, len(verdict.candidates))
                    states.append(st)
                else:
                    self._publish(verdict, tp, rec.offset)
        if not states:
            return
        t0, t0_ns = time.perf_counter(), time.time_ns()
        fetched = await self._fetch(states)
        if fetched is None:  # stopping during a Redis outage: these records stay uncommitted
            return
        found, raws = fetched
        fetch_ms = (time.perf_counter() - t0) * 1e3
        items = await asyncio.to_thread(self._prepare, states, found, raws)
        for st in states:
            st.fetch_ms = fetch_ms
            self.tracing.end(self.tracing.stage(st.span, "jobscore.fetch_summaries", t0_ns))
            if st.remaining == 0:  # nothing to score: every candidate failed before the engine
                self._complete(st)
            else:
                st.score_span = self.tracing.stage(st.span, "jobscore.score")
        items = await self._cached_scores(items)
        self.batcher.put(items)
        metrics.QUEUE_DEPTH.set(len(self.batcher))

    async def _fetch(self, states: list[RequestState]) -> tuple[Found, dict[str, SummaryRecord]] | None:
        """Every candidate's cache entry (one MGET, tried with backoff inside the cache).

        Redis outage policy (docs/operating.md "Faults and recovery"): keep trying while not ready; a request whose
        deadline passes meanwhile is answered "timeout" and leaves ``states``; on stop, what is left is not
        answered and not committed (the next owner replays it). The process never exits over Redis.
        """
        while True:
            unique = list(dict.fromkeys(j for st in states for j in st.req.candidates))
            try:
                found = dict(zip(unique, await self.cache.get_many(unique), strict=True))
                return found, await self._raw_fallbacks(found)
            except CacheUnavailable:
                pass  # not ready meanwhile (the cache logged the outage once); wait below
            now = time.time()
            for st in [st for st in states if st.expired(now)]:
                states.remove(st)
                metrics.REQUESTS.labels("timeout").inc()
                answer = st.req.reply_topic or self._results_topic
                ranking = self._bare_ranking(st.req, "timeout", "deadline passed while Redis was unavailable", now)
                self._publish(
                    [answer_record(answer, ranking, st.trace)],
                    TopicPartition(st.key.topic, st.key.partition),
                    st.key.offset,
                )
            if self._stop.is_set():
                # Commit what is answered before these records, then hand their partitions' tails back.
                await self._commit()
                self.offsets.forget({TopicPartition(st.key.topic, st.key.partition) for st in states})
                log.warning(
                    "stopping during a Redis outage: unanswered requests left to the group",
                    extra={"requests": len(states)},
                )
                return None
            await self.shell.wait_for_redis()

    async def _raw_fallbacks(self, found: Found) -> dict[str, SummaryRecord]:
        """With ``missing_summary="raw"``: cache entries carrying a raw description for the candidates without
        a usable summary (one more MGET, only for those)."""
        if self.raw_cache is None:
            return {}
        need = needs_raw(found)
        if not need:
            return {}
        if self.raw_cache.version == self.cache.version:
            recs: Sequence[object] = [found[j] for j in need]
        else:
            recs = await self.raw_cache.get_many(need)
        return raw_entries(need, recs)

    async def _cached_scores(self, items: list[WorkItem]) -> list[WorkItem]:
        """With the score cache on: answer the pairs scored before from it (one MGET); return the rest."""
        if self.score_cache is None or not items:
            return items
        cache = self.score_cache
        keys = [cache.key(it.tokens) for it in items]
        for it, key in zip(items, keys, strict=True):
            it.cache_key = key
        cached = await cache.get_many(keys)
        misses: list[WorkItem] = []
        for it, score in zip(items, cached, strict=True):
            if score is None:
                misses.append(it)
            elif it.state.finish_item(it.index, score):
                self._complete(it.state)
        return misses

    def _prepare(self, states: Sequence[RequestState], found: Found, raws: dict[str, SummaryRecord]) -> list[WorkItem]:
        """Token ids for every (request, candidate) pair; runs in a thread (tokenizing is CPU work)."""
        s = self.settings
        items: list[WorkItem] = []
        enqueued = time.monotonic()
        for st in states:
            st.candidates_total = len(dict.fromkeys(st.req.candidates))
            try:
                qids = self.prompts.query_ids(st.req.query)
                self.prompts.build(qids, [])
            except PromptTooLong as e:
                st.errors.extend(
                    CandidateError(job_id=j, reason="oversized", detail=str(e))
                    for j in dict.fromkeys(st.req.candidates)
                )
                continue
            res = resolve(
                st.req.candidates,
                found,
                raws,
                summarizer_version=s.summarizer_version,
                max_summary_chars=s.max_summary_chars,
                raw_fallback_tokens=s.raw_fallback_tokens,
            )
            st.errors.extend(res.errors)
            for err in res.errors:
                if err.reason == "missing_summary":
                    metrics.MISSING_SUMMARY.labels("error").inc()
            st.job_ids = [c.job_id for c in res.candidates]
            st.raw_fallback = [c.job_id for c in res.candidates if c.raw_fallback]
            metrics.MISSING_SUMMARY.labels("raw_fallback").inc(len(st.raw_fallback))
            doc_ids = self.prompts.doc_ids(
                [(c.job_id, c.cache_key) for c in res.candidates], [c.text for c in res.candidates]
            )
            for i, (dids, c) in enumerate(zip(doc_ids, res.candidates, strict=True)):
                items.append(WorkItem(st, i, self.prompts.build(qids, dids[: c.max_tokens]), enqueued))
            st.scores = [None] * len(st.job_ids)
            st.remaining = len(st.job_ids)
        return items

    def _validate(self, rec: ConsumerRecord, now: float) -> ScoreRequest | list[Outgoing]:
        """A request to score, or the messages that answer it (dead letter and/or a ranking) right away."""
        try:
            req = SCORE_REQUESTS.decode(rec.value)
        except SchemaError as e:
            log.warning(
                "bad request to dead letters",
                extra={"topic": rec.topic, "partition": rec.partition, "offset": rec.offset, "reason": e.reason},
            )
            metrics.DEAD_LETTERS.labels("worker", e.kind).inc()
            return [self._dead_letter(rec, e.reason, e.kind)]
        answer = req.reply_topic or self._results_topic
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
                answer_record(answer, rejected, trace_headers(rec.headers)),
                self._dead_letter(rec, reason, "oversized"),
            ]
        if req.deadline is not None and now > req.deadline:
            reason = f"deadline passed {now - req.deadline:.3f}s before scoring started"
            log.info("request timed out", extra={"request_id": req.request_id, "reason": reason})
            metrics.REQUESTS.labels("timeout").inc()
            timed_out = self._bare_ranking(req, "timeout", reason, now)
            return [answer_record(answer, timed_out, trace_headers(rec.headers))]
        return req

    def _dead_letter(self, rec: ConsumerRecord, reason: str, kind: DeadLetterKind) -> Outgoing:
        """The dead letter of a record; cut to fit the dead-letter topic (jobscore.kafka.dead_letter)."""
        dl = dead_letter(rec, "worker", reason, kind, self.settings.dead_letter_max_original_bytes)
        # The original record's headers travel with it (its trace context included), ours beside them.
        # Kafka Connect's convention (schemas/deadletters.py): the original key, value and headers, the reason
        # in headers, so any Kafka tool can show and replay it.
        key, value, headers = dead_letter_record(dl, rec.headers)
        return Outgoing(self._dlq_topic, value, key, headers)

    def _bare_ranking(self, req: ScoreRequest, status: RankingStatus, detail: str, now: float) -> Ranking:
        return bare_ranking(req, status, detail, now, self.made_by)

    # --- engine: batch → score → rank → publish -----------------------------------------------------

    async def _engine_loop(self) -> None:
        """Cut batches and hand them to the engine. An engine that schedules by priority (vLLM here) takes up to
        ``engine_batches_in_flight`` batches at once — it shares its steps between them and keeps busy while
        the worker ranks and publishes — plus one online batch beyond that, so online work never waits for a
        slot held by bulk: its prompts go ahead of every waiting bulk prompt inside the engine. Other engines
        take one batch at a time, online and bulk items mixed (worker/batching.py)."""
        prioritized = bool(getattr(self.engine, "supports_priority", False))
        limit = self.settings.engine_batches_in_flight if prioritized else 1
        inflight: set[asyncio.Task[None]] = set()

        def lanes() -> tuple[Lane, ...]:
            if len(inflight) < limit:
                return LANES
            return ("online",) if prioritized and len(inflight) == limit else ()

        def done(task: asyncio.Task[None]) -> None:
            inflight.discard(task)
            self.batcher.poke()

        try:
            while True:
                batch = await self.batcher.next_batch(lanes, mix_lanes=not prioritized)
                if self._failed is not None:  # a batch failed the engine: nothing more goes to it
                    break
                for st in self.batcher.take_finished():
                    self._complete(st)
                metrics.QUEUE_DEPTH.set(len(self.batcher))
                if not batch:
                    if self.batcher.closed:
                        break
                    continue
                task = asyncio.create_task(self._score_batch(batch, prioritized), name="engine-batch")
                inflight.add(task)
                task.add_done_callback(done)
            while inflight:  # closed: the batches in the engine still finish (the drain waits for them)
                await asyncio.wait(set(inflight))
        except Exception as e:
            self._fail(e)
        finally:
            for task in inflight:  # cancelled (a failure): nothing more is published
                task.cancel()

    async def _score_batch(self, batch: list[WorkItem], prioritized: bool) -> None:
        """Score one batch, record its scores, rank and publish the requests it finished."""
        try:
            t0 = time.perf_counter()
            served = list({id(it.state): it.state.span for it in batch}.values())
            tokens = sum(len(it.tokens) for it in batch)
            batch_span = self.tracing.batch(served, len(batch), tokens)
            online = any(it.state.lane == "online" for it in batch)
            priority = (ONLINE_PRIORITY if online else BULK_PRIORITY) if prioritized else None
            metrics.ENGINE_BUSY.inc(self._engine_busy.enter(t0))
            try:
                scores = await asyncio.to_thread(self.scorer.score, [it.tokens for it in batch], priority)
            finally:
                metrics.ENGINE_BUSY.inc(self._engine_busy.leave(time.perf_counter()))
            self.tracing.end(batch_span)
            dt = time.perf_counter() - t0
            metrics.ENGINE_SECONDS.observe(dt)
            metrics.BATCH_SIZE.observe(len(batch))
            metrics.BATCH_TOKENS.observe(tokens)
            metrics.ITEMS_SCORED.inc(sum(s is not None for s in scores))
            for lane in LANES:
                metrics.LANE_ITEMS.labels(lane).inc(sum(it.state.lane == lane for it in batch))
                metrics.LANE_QUEUE.labels(lane).set(self.batcher.queued(lane))
            self.items_scored += len(batch)
            self.batches += 1
            finished: list[RequestState] = []
            for st in {id(it.state): it.state for it in batch}.values():
                st.score_ms += dt * 1e3
            for it, sc in zip(batch, scores, strict=True):
                if it.state.finish_item(it.index, sc):
                    finished.append(it.state)
            if self.score_cache is not None:
                scored = zip(batch, scores, strict=True)
                self.score_cache.put_many([(it.cache_key, sc) for it, sc in scored if it.cache_key and sc is not None])
            for st in finished:
                self._complete(st)
        except Exception as e:
            self._fail(e)

    def _complete(self, st: RequestState) -> None:
        """Rank a finished request and publish its answer."""
        done = time.time()
        answer = st.req.reply_topic or self._results_topic
        if st.timed_out:
            metrics.REQUESTS.labels("timeout").inc()
            ranking = self._bare_ranking(st.req, "timeout", "deadline passed while queued for scoring", done)
        else:
            created = st.req.created_at or st.received_at
            timings = Timings(
                queue_ms=max(0.0, (st.received_at - st.req.created_at) * 1e3) if st.req.created_at else 0.0,
                fetch_ms=st.fetch_ms,
                score_ms=st.score_ms,
                total_ms=max(0.0, (done - created) * 1e3),
            )
            ranking = self._ranking(st, timings, done)
            for e in ranking.errors:
                metrics.CANDIDATE_ERRORS.labels(e.reason).inc()
            metrics.REQUESTS.labels("ok").inc()
            if st.req.created_at:
                metrics.REQUEST_LATENCY.observe(timings.total_ms / 1e3)
        self.tracing.end(st.score_span)
        publish_span = self.tracing.stage(st.span, "jobscore.publish")

        def traced() -> None:  # the ranking is acknowledged: the request's spans end
            self.tracing.end(publish_span)
            self.tracing.end(st.span, status=ranking.status, scored=len(ranking.results))

        self._publish(
            [answer_record(answer, ranking, st.trace)],
            TopicPartition(st.key.topic, st.key.partition),
            st.key.offset,
            traced if st.span is not None else None,
        )

    # --- publish → answered → commit -----------------------------------------------------------------

    def _publish(
        self, outbox: Sequence[Outgoing], tp: TopicPartition, offset: int, acked: Callable[[], None] | None = None
    ) -> None:
        task = asyncio.create_task(self._deliver(outbox, tp, offset, acked))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _deliver(
        self, outbox: Sequence[Outgoing], tp: TopicPartition, offset: int, acked: Callable[[], None] | None = None
    ) -> None:
        try:
            await self.outbox.send_all(outbox)
        except Exception as e:
            self._fail(await self.outbox.explain(e))
            return
        if acked is not None:
            acked()
        self.offsets.done(tp, offset)
        self.requests_done += 1
        await self._notify()

    async def _commit(self) -> None:
        # Offsets taken *before* the broker check: all their answers were acknowledged before it, so a
        # passing check means the broker still had their topics after acknowledging them.
        self._uncommitted.update(self.offsets.committable())
        offsets = dict(self._uncommitted)
        if not offsets or self.consumer is None:
            return
        try:
            outcome = await self.shell.commit(offsets)
        except BrokerLost as e:
            self._fail(e)  # never commit into the void: exit uncommitted, the group replays
            return
        if outcome is not Committed.POSTPONED:
            self._uncommitted.clear()

    def _backpressure(self) -> None:
        self.lanes.backpressure()

    @property
    def _paused(self) -> bool:
        return self.lanes.paused

    @property
    def pauses(self) -> int:
        return self.lanes.pauses

    def _fail(self, e: BaseException) -> None:
        if self._failed is None:
            # The command logs the one ERROR line, with the exit code (app/commands.py `service_failed`); here
            # the context, with the traceback only where it says more than the message (not a lost broker).
            log.warning(
                "worker failing: stopping without committing unfinished work",
                extra={"error": repr(e)},
                exc_info=None if isinstance(e, BrokerLost) else e,
            )
            if isinstance(e, EngineFailure | KafkaError):
                self._failed = e
            else:
                self._failed = EngineFailure(str(e))
                self._failed.__cause__ = e
            HEALTH.set("engine" if isinstance(self._failed, EngineFailure) else "broker", False, f"failed: {e!r}")
            self._stop.set()
            # Wake anyone draining: they wait on the condition, and a failure ends the wait too.
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._answered:
            self._answered.notify_all()

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Finish (bounded) what the revoked partitions have in flight, commit it, drop the rest."""
        if not revoked:
            return
        try:
            async with asyncio.timeout(self.settings.drain_timeout_s), self._answered:
                await self._answered.wait_for(lambda: self.offsets.in_flight(revoked) == 0 or self._failed is not None)
        except TimeoutError:
            log.warning(
                "revoke: in-flight work did not finish in time; dropping it for the next owner",
                extra={"in_flight": self.offsets.in_flight(revoked)},
            )
        if self._failed is None:
            await self._commit()
        keys = {(tp.topic, tp.partition) for tp in revoked}
        self.batcher.drop(lambda st: (st.key.topic, st.key.partition) in keys)
        self.offsets.forget(revoked)
        for tp in revoked:
            self._uncommitted.pop(tp, None)
        log.info("partitions revoked", extra={"partitions": _names(revoked)})

    # --- in-process scoring, no broker (score-backfill --direct) --------------------------------------

    async def rank_now(self, requests: Sequence[ScoreRequest]) -> list[Ranking]:
        """Rank ``requests`` in this process, in order: the data path's summary lookup, raw fallback, prompt
        building, engine batches (``max_batch_items``) and ranking, without consuming, publishing or
        committing anything. The worker need not be started."""
        now = time.time()
        states = [RequestState(r, RecordKey("direct", 0, i), now) for i, r in enumerate(requests)]
        unique = list(dict.fromkeys(j for r in requests for j in r.candidates))
        found: Found = dict(zip(unique, await self.cache.get_many(unique), strict=True))
        raws = await self._raw_fallbacks(found)
        items = await asyncio.to_thread(self._prepare, states, found, raws)
        size = self.settings.max_batch_items
        for start in range(0, len(items), size):
            part = items[start : start + size]
            scores = await asyncio.to_thread(self.scorer.score, [it.tokens for it in part])
            for it, sc in zip(part, scores, strict=True):
                it.state.finish_item(it.index, sc)
        done = time.time()
        return [self._ranking(st, Timings(total_ms=(done - now) * 1e3), done) for st in states]

    def _ranking(self, st: RequestState, timings: Timings, done: float) -> Ranking:
        """A fully scored request's ranking (sorted, cut to top_k, with its errors and provenance)."""
        return ranking_of_scores(
            st.req,
            st.job_ids,
            st.scores,
            errors=st.errors,
            raw_fallback=st.raw_fallback,
            candidates_total=st.candidates_total,
            timings=timings,
            produced_at=done,
            made_by=self.made_by,
        )


async def run_worker(settings: WorkerSettings, engine: ScoringEngine, stop: asyncio.Event | None = None) -> Worker:
    """Run a worker until ``stop`` (jobscore/service.py `run_service`: a stop during start-up abandons it)."""
    worker = Worker(settings, engine)
    await run_service(worker, stop, "worker", lambda: {"requests": worker.requests_done, "items": worker.items_scored})
    return worker

"""Client side: publish postings and scoring requests, await rankings, tail a topic.

`ScoringClient` is the library for request publishers (README "Client library")::

    async with ScoringClient(settings) as c:
        ranking = await c.score("python engineer", ["job-1", "job-2"], top_k=1, timeout=30)

It keeps one producer for its lifetime and one shared results reader (`ResultsReader`): a consumer
without a group (it observes the results and dead-letter topics from their end; it takes no part in
delivery) that routes each ranking to the request that waits for it. The reader

- never dies on a record it cannot decode (a future ``ranking.v2``, garbage): it counts and skips it;
- keeps memory bounded: it tracks only ids this client published and not yet delivered, each for at most
  ``result_ttl_s``; rankings for other ids, and duplicates of delivered ones, are counted and dropped;
- lets a timed-out wait be retried on the same id (a ranking that arrives between the two waits is kept
  for the retry, until its TTL);
- turns a dead letter naming a pending request id into `DeadLettered` with the reason.

`RankingWaiter` is the older observer used by tests, the demo and the benches: it keeps every ranking it
sees (for short-lived tools) and resolves one future per request id; it also skips undecodable records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from jobscore.kafka import client_security_kwargs, make_producer, topic_name, unreachable_message
from jobscore.settings import CommonSettings
from schemas import (
    DEAD_LETTERS,
    POSTINGS,
    RANKINGS,
    SCORE_REQUESTS,
    SCORE_REQUESTS_BULK,
    DeadLetter,
    JobPosted,
    Ranking,
    SchemaError,
    ScoreRequest,
    TopicSpec,
)
from schemas.headers import message_headers, trace_headers

log = logging.getLogger(__name__)

Lane = Literal["online", "bulk"]


async def publish_postings(settings: CommonSettings, postings: Iterable[JobPosted]) -> int:
    producer = make_producer(settings)
    await producer.start()
    n = 0
    try:
        topic = topic_name(settings, POSTINGS)
        futs = []
        for p in postings:
            # Keyed by job id: every version of a posting lands on one partition, in order.
            futs.append(await producer.send(topic, POSTINGS.encode(p), key=p.job_id.encode()))
            n += 1
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return n


_REQUEST_TAG = str(ScoreRequest.__struct_config__.tag)


def new_request(
    query: str,
    candidates: Sequence[str],
    top_k: int = 10,
    deadline_s: float | None = None,
    request_id: str | None = None,
    reply_topic: str | None = None,
) -> ScoreRequest:
    now = time.time()
    return ScoreRequest(
        request_id=request_id or uuid.uuid4().hex,
        query=query,
        candidates=list(candidates),
        top_k=top_k,
        deadline=now + deadline_s if deadline_s else None,
        reply_topic=reply_topic,
        created_at=now,
    )


def new_traceparent() -> bytes:
    """A fresh W3C traceparent (sampled) for a request that comes without one."""
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01".encode()


async def publish_requests(settings: CommonSettings, requests: Iterable[ScoreRequest]) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        topic = topic_name(settings, SCORE_REQUESTS)
        headers = message_headers(_REQUEST_TAG)
        futs = [
            await producer.send(topic, SCORE_REQUESTS.encode(r), key=r.request_id.encode(), headers=headers)
            for r in requests
        ]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def _assign_all(consumer: AIOKafkaConsumer, topics: str | Sequence[str], from_beginning: bool) -> None:
    tps: list[TopicPartition] = []
    for topic in [topics] if isinstance(topics, str) else topics:
        parts = None
        deadline = time.monotonic() + 30
        while not parts:
            parts = consumer.partitions_for_topic(topic)
            if parts:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic} has no partitions (does it exist?)")
            await consumer.topics()  # refreshes cluster metadata
            await asyncio.sleep(0.2)  # back off between metadata refreshes while the topic is being created
        tps += [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    if from_beginning:
        await consumer.seek_to_beginning(*tps)
    else:
        await consumer.seek_to_end(*tps)
        # Resolve the lazy end positions now so messages published after this call are seen.
        for tp in tps:
            await consumer.position(tp)


class RankingWaiter:
    """Collect rankings for request ids from the results topic, deduplicated by request id."""

    def __init__(self, settings: CommonSettings, topic: str | None = None) -> None:
        self.settings = settings
        self.topic = topic or topic_name(settings, RANKINGS)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            client_id=f"{settings.client_id}-waiter",
            **client_security_kwargs(settings),
        )
        self.rankings: dict[str, Ranking] = {}
        self.duplicates = 0
        self.undecodable = 0
        self._waiters: dict[str, asyncio.Future[Ranking]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self, from_beginning: bool = False) -> RankingWaiter:
        await self.consumer.start()
        await _assign_all(self.consumer, self.topic, from_beginning)
        self._task = asyncio.create_task(self._pump())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()

    async def __aenter__(self) -> RankingWaiter:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def _pump(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    try:
                        r = RANKINGS.decode(rec.value)
                    except SchemaError as e:
                        # A record we cannot read (a newer ranking version, garbage) must not end the pump.
                        self.undecodable += 1
                        log.debug("undecodable ranking skipped", extra={"offset": rec.offset, "reason": e.reason})
                        continue
                    if r.request_id in self.rankings:
                        self.duplicates += 1
                        continue
                    self.rankings[r.request_id] = r
                    fut = self._waiters.pop(r.request_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(r)

    async def wait(self, request_id: str, timeout: float) -> Ranking:
        if request_id in self.rankings:
            return self.rankings[request_id]
        fut = self._waiters.get(request_id)
        if fut is None or fut.done():
            fut = self._waiters[request_id] = asyncio.get_running_loop().create_future()
        try:
            # shield: a timed-out wait leaves the future pending for a retry on the same id.
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            if request_id in self.rankings:
                return self.rankings[request_id]
            raise

    async def wait_all(self, request_ids: Iterable[str], timeout: float) -> dict[str, Ranking]:
        ids = list(request_ids)
        async with asyncio.timeout(timeout):
            for rid in ids:
                await self.wait(rid, timeout)
        return {rid: self.rankings[rid] for rid in ids}


async def tail(
    settings: CommonSettings,
    spec: TopicSpec[Any],
    from_beginning: bool = False,
    limit: int | None = None,
    idle_exit_s: float | None = None,
) -> AsyncIterator[tuple[Any, Any]]:
    """Yield ``(record, decoded message or SchemaError)`` from every partition of a topic: at most ``limit``
    records, and when ``idle_exit_s`` is given, until nothing has arrived for that long."""
    from schemas import SchemaError

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        client_id=f"{settings.client_id}-tail",
        **client_security_kwargs(settings),
    )
    await consumer.start()
    n = 0
    try:
        await _assign_all(consumer, topic_name(settings, spec), from_beginning)
        idle_since = time.monotonic()
        while limit is None or n < limit:
            batch = await consumer.getmany(timeout_ms=500)
            if not batch:
                if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    return
                continue
            idle_since = time.monotonic()
            for records in batch.values():
                for rec in records:
                    try:
                        msg = spec.decode(rec.value)
                    except SchemaError as e:
                        msg = e
                    yield rec, msg
                    n += 1
                    # Checked per record: one fetch can bring many (the loop's own check would let them all out).
                    if limit is not None and n >= limit:
                        return
    finally:
        await consumer.stop()


# --- the client library -----------------------------------------------------------------------------


class ScoringError(Exception):
    """Base of every error `ScoringClient` raises; ``request_id`` names the request."""

    def __init__(self, request_id: str, message: str) -> None:
        super().__init__(message)
        self.request_id = request_id


class ScoreTimeout(ScoringError, TimeoutError):
    """No answer within the wait. The request may still be answered: wait again with ``result(id)``."""


class DeadlineExceeded(ScoringError):
    """The worker answered ``status="timeout"``: the request's deadline passed before it was scored."""


class RequestRejected(ScoringError):
    """The worker answered ``status="rejected"`` (e.g. more candidates than the deployment allows)."""


class DeadLettered(ScoringError):
    """The request could not be read (invalid, unknown schema, oversized) and went to the dead-letter topic."""

    def __init__(self, request_id: str, reason: str, error_type: str) -> None:
        super().__init__(request_id, f"request {request_id} was dead-lettered ({error_type}): {reason}")
        self.reason = reason
        self.error_type = error_type


class BrokerUnavailable(ScoringError):
    """Kafka could not be reached or refused the write; the message says what to check."""


class _IdOnly(msgspec.Struct):
    """The request id inside a dead letter's original bytes, if they are a JSON object that has one."""

    request_id: Any = None


_ID_ONLY = msgspec.json.Decoder(_IdOnly)


@dataclass
class ReaderStats:
    """What the results reader saw besides the rankings it delivered."""

    delivered: int = 0
    undecodable: int = 0  # records of the results topic it could not decode (e.g. a newer schema version)
    unknown: int = 0  # rankings for ids this client does not track (others' requests, or already expired)
    duplicates: int = 0  # second copies of delivered rankings (at-least-once redelivery)
    expired: int = 0  # tracked ids dropped after result_ttl_s without anyone collecting them
    dead_letters: int = 0  # dead letters that named a tracked request
    fetch_errors: int = 0


@dataclass(eq=False)
class _Tracked:
    expires_at: float
    outcome: Ranking | ScoringError | None = None
    future: asyncio.Future[None] | None = None  # set once ``outcome`` is known


class ResultsReader:
    """One consumer (no group) on a results topic and the dead-letter topic, shared by every wait.

    Only ids registered with `track` are kept, each until it is collected or ``ttl_s`` passes; at most
    ``max_tracked`` at once (the oldest is dropped first). Everything else is counted and dropped.
    """

    def __init__(self, settings: CommonSettings, topic: str, ttl_s: float, max_tracked: int) -> None:
        self.settings = settings
        self.topic = topic
        self.dlq_topic = topic_name(settings, DEAD_LETTERS)
        self.ttl_s = ttl_s
        self.max_tracked = max_tracked
        self.stats = ReaderStats()
        self._tracked: OrderedDict[str, _Tracked] = OrderedDict()
        self._done: OrderedDict[str, float] = OrderedDict()  # delivered ids → expiry (to count duplicates)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            client_id=f"{settings.client_id}-results",
            **client_security_kwargs(settings),
        )
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._tracked)

    async def start(self) -> None:
        await self._consumer.start()
        # Both topics from their current end, positions resolved now: nothing published after this is missed.
        await _assign_all(self._consumer, [self.topic, self.dlq_topic], from_beginning=False)
        self._task = asyncio.create_task(self._pump(), name="jobscore-results-reader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()
        for t in self._tracked.values():
            if t.future is not None and not t.future.done():
                t.future.cancel()

    def track(self, request_id: str) -> None:
        """Expect an answer for ``request_id`` (call before publishing it)."""
        self._expire(time.monotonic())
        self._tracked[request_id] = _Tracked(time.monotonic() + self.ttl_s)
        self._tracked.move_to_end(request_id)
        self._done.pop(request_id, None)
        while len(self._tracked) > self.max_tracked:
            rid, t = self._tracked.popitem(last=False)
            self._drop(rid, t)

    def forget(self, request_id: str) -> None:
        t = self._tracked.pop(request_id, None)
        if t is not None and t.future is not None and not t.future.done():
            t.future.cancel()

    async def wait(self, request_id: str, timeout: float) -> Ranking:
        """The ranking of a tracked id; raises a `ScoringError`. After `ScoreTimeout` the id stays tracked
        (until its TTL) and may be waited for again."""
        t = self._tracked.get(request_id)
        if t is None:
            raise ScoringError(
                request_id,
                f"request {request_id} is not tracked (never sent by this client, "
                "already collected, or older than result_ttl_s)",
            )
        if t.outcome is None:
            if t.future is None or t.future.done():
                t.future = asyncio.get_running_loop().create_future()
            try:
                # shield: timing out must not cancel the shared future a retry will wait on.
                await asyncio.wait_for(asyncio.shield(t.future), timeout)
            except TimeoutError:
                if t.outcome is None:
                    raise ScoreTimeout(
                        request_id, f"no ranking for {request_id} within {timeout:g}s; wait again with result()"
                    ) from None
        self._tracked.pop(request_id, None)
        self._done[request_id] = time.monotonic() + self.ttl_s
        outcome = t.outcome
        assert outcome is not None
        if isinstance(outcome, ScoringError):
            raise outcome
        return outcome

    def _resolve(self, request_id: str, outcome: Ranking | ScoringError) -> None:
        t = self._tracked[request_id]
        if t.outcome is not None:
            # A request over max_candidates gets a dead letter and a "rejected" ranking, in either order:
            # the ranking is the answer, when it comes before the outcome is collected.
            if isinstance(t.outcome, DeadLettered) and isinstance(outcome, RequestRejected):
                t.outcome = outcome
            else:
                self.stats.duplicates += 1
            return
        t.outcome = outcome
        self.stats.delivered += 1
        if t.future is not None and not t.future.done():
            t.future.set_result(None)

    def _drop(self, request_id: str, t: _Tracked) -> None:
        self.stats.expired += 1
        if t.future is not None and not t.future.done():
            t.outcome = ScoreTimeout(request_id, f"{request_id} dropped from tracking (TTL or max_tracked)")
            t.future.set_result(None)

    def _expire(self, now: float) -> None:
        while self._tracked:
            rid, t = next(iter(self._tracked.items()))
            if t.expires_at > now or (t.future is not None and not t.future.done()):
                break
            del self._tracked[rid]
            self._drop(rid, t)
        while self._done and next(iter(self._done.values())) <= now:
            self._done.popitem(last=False)

    async def _pump(self) -> None:
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=500)
            except KafkaError as e:
                # The client reconnects by itself; keep reading (waits time out meanwhile, typed).
                self.stats.fetch_errors += 1
                log.warning("results reader: fetch failed; retrying", extra={"error": repr(e)})
                await asyncio.sleep(1.0)  # back off before the next fetch while the broker is away
                continue
            self._expire(time.monotonic())
            for tp, records in batch.items():
                for rec in records:
                    try:
                        if tp.topic == self.dlq_topic:
                            self._on_dead_letter(rec.key, rec.value)
                        else:
                            self._on_ranking(rec.value)
                    except Exception as e:  # one bad record never ends the reader
                        self.stats.undecodable += 1
                        log.debug("results reader: record skipped", extra={"error": repr(e), "offset": rec.offset})

    def _on_ranking(self, value: bytes | None) -> None:
        try:
            r = RANKINGS.decode(value)
        except SchemaError:
            self.stats.undecodable += 1
            return
        if r.request_id in self._tracked:
            if r.status == "rejected":
                self._resolve(r.request_id, RequestRejected(r.request_id, f"rejected: {r.detail}"))
            elif r.status == "timeout":
                self._resolve(r.request_id, DeadlineExceeded(r.request_id, f"deadline passed: {r.detail}"))
            else:
                self._resolve(r.request_id, r)
        elif r.request_id in self._done:
            self.stats.duplicates += 1
        else:
            self.stats.unknown += 1

    def _on_dead_letter(self, key: bytes | None, value: bytes | None) -> None:
        if not self._tracked:
            return
        try:
            dl: DeadLetter = DEAD_LETTERS.decode(value)
        except SchemaError:
            return  # dead letters of other versions are not ours to judge
        if dl.stage != "worker":
            return
        candidates = []
        if key:
            candidates.append(key.decode("utf-8", "replace"))
        with contextlib.suppress(Exception):
            rid = _ID_ONLY.decode(dl.original).request_id
            if isinstance(rid, str):
                candidates.append(rid)
        for rid in candidates:
            t = self._tracked.get(rid)
            if t is not None and t.outcome is None:
                self.stats.dead_letters += 1
                self._resolve(rid, DeadLettered(rid, dl.reason, dl.error_type))
                return


class ScoringClient:
    """Publish scoring requests and await their rankings (module docstring). Use as an async context."""

    def __init__(
        self,
        settings: CommonSettings,
        *,
        reply_topic: str | None = None,
        lane: Lane = "online",
        result_ttl_s: float = 600.0,
        max_tracked: int = 100_000,
    ) -> None:
        self.settings = settings
        self.reply_topic = reply_topic
        # Online requests are served first; "bulk" (backfills) uses the worker's spare capacity only.
        self._requests_topic = topic_name(settings, SCORE_REQUESTS_BULK if lane == "bulk" else SCORE_REQUESTS)
        self._producer: AIOKafkaProducer | None = None
        self.reader = ResultsReader(
            settings, reply_topic or topic_name(settings, RANKINGS), ttl_s=result_ttl_s, max_tracked=max_tracked
        )

    @property
    def stats(self) -> ReaderStats:
        return self.reader.stats

    async def __aenter__(self) -> ScoringClient:
        producer = make_producer(self.settings)
        try:
            await producer.start()
            await self.reader.start()
        except (KafkaConnectionError, TimeoutError) as e:
            await producer.stop()
            raise BrokerUnavailable("", unreachable_message(self.settings)) from e
        self._producer = producer
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.reader.stop()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def submit(self, request: ScoreRequest, traceparent: bytes | None = None) -> str:
        """Publish one request (acknowledged, acks=all) and track its answer; returns its id."""
        assert self._producer is not None, "use `async with ScoringClient(...)`"
        if self.reply_topic and request.reply_topic != self.reply_topic:
            request = msgspec.structs.replace(request, reply_topic=self.reply_topic)
        trace = trace_headers([("traceparent", traceparent or new_traceparent())])
        self.reader.track(request.request_id)
        try:
            fut = await self._producer.send(
                self._requests_topic,
                SCORE_REQUESTS.encode(request),
                key=request.request_id.encode(),
                headers=message_headers(_REQUEST_TAG, trace),
            )
            await fut
        except KafkaError as e:
            self.reader.forget(request.request_id)
            raise BrokerUnavailable(request.request_id, f"could not publish {request.request_id}: {e!r}") from e
        return request.request_id

    async def result(self, request_id: str, timeout: float) -> Ranking:
        """Wait for a submitted request's ranking. `ScoreTimeout` leaves it waitable again."""
        return await self.reader.wait(request_id, timeout)

    async def score(
        self,
        query: str,
        job_ids: Sequence[str],
        *,
        top_k: int = 10,
        timeout: float = 30.0,
        deadline_s: float | None = None,
        request_id: str | None = None,
    ) -> Ranking:
        """Score ``job_ids`` against ``query``; the best ``top_k`` as a `Ranking`.

        ``deadline_s``: the worker answers "timeout" instead of scoring after this many seconds (default
        none: the request is scored however late). Raises `ScoreTimeout` (retry with ``result(id)``),
        `DeadlineExceeded`, `RequestRejected`, `DeadLettered` or `BrokerUnavailable`.
        """
        req = new_request(query, job_ids, top_k=top_k, deadline_s=deadline_s, request_id=request_id)
        await self.submit(req)
        return await self.result(req.request_id, timeout)

    async def score_many(
        self,
        queries: Iterable[tuple[str, Sequence[str]]],
        *,
        top_k: int = 10,
        timeout: float = 60.0,
        deadline_s: float | None = None,
    ) -> list[Ranking | ScoringError]:
        """Score several (query, job_ids) at once: all published, then awaited together within ``timeout``.
        Returns one entry per query, in order: its `Ranking`, or the `ScoringError` it ended with."""
        reqs = [new_request(q, ids, top_k=top_k, deadline_s=deadline_s) for q, ids in queries]
        await asyncio.gather(*(self.submit(r) for r in reqs))
        outcomes = await asyncio.gather(*(self.result(r.request_id, timeout) for r in reqs), return_exceptions=True)
        out: list[Ranking | ScoringError] = []
        for o in outcomes:
            if isinstance(o, Ranking | ScoringError):
                out.append(o)
            else:
                raise o
        return out

"""Publishing: postings and scoring requests, one at a time or many, and `ScoringClient`, which publishes
requests and awaits their rankings (README "Publishing requests")::

    async with ScoringClient(ClientConfig.from_env()) as c:
        ranking = await c.score("python engineer", ["job-1", "job-2"], top_k=1, timeout=30)

It keeps one producer for its lifetime and one shared `ResultsReader` (client/results.py).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Literal

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.structs import ConsumerRecord

from client.config import ConfigSource, as_config
from client.errors import BrokerUnavailable, ScoringError
from client.kafka import TopicReader, make_producer, unreachable_message
from client.results import ReaderStats, ResultsReader
from schemas import (
    DEAD_LETTERS,
    POSTINGS,
    SCORE_REQUESTS,
    SCORE_REQUESTS_BULK,
    JobPosted,
    Ranking,
    SchemaError,
    ScoreRequest,
)
from schemas.deadletters import read_dead_letter
from schemas.headers import message_headers, trace_headers
from schemas.messages import TOPIC_NAME_PATTERN
from schemas.topics import TopicSpec

Lane = Literal["online", "bulk"]

_REQUEST_TAG = str(ScoreRequest.__struct_config__.tag)
_POSTING_TAG = str(JobPosted.__struct_config__.tag)


def check_topic_name(name: str) -> str:
    """``name`` if it is a legal Kafka topic name (1-249 of ``[a-zA-Z0-9._-]``, not ``.``/``..``), else
    `ValueError`: a request naming an illegal reply topic would only be dead-lettered."""
    if not re.fullmatch(TOPIC_NAME_PATTERN, name):
        raise ValueError(f"{name!r} is not a legal Kafka topic name: 1-249 characters of [a-zA-Z0-9._-]")
    return name


def new_request(
    query: str,
    candidates: Sequence[str],
    top_k: int = 10,
    deadline_s: float | None = None,
    request_id: str | None = None,
    reply_topic: str | None = None,
) -> ScoreRequest:
    """A `ScoreRequest` with a fresh id (unless given) and ``deadline_s`` seconds from now (if given)."""
    if reply_topic is not None:
        check_topic_name(reply_topic)
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


async def publish_postings(source: ConfigSource, postings: Iterable[JobPosted]) -> int:
    """Publish postings (acknowledged by every in-sync replica); returns how many."""
    config = as_config(source)
    producer = make_producer(config)
    await producer.start()
    n = 0
    try:
        headers = message_headers(_POSTING_TAG)
        futs = []
        for p in postings:
            # Keyed by job id: every version of a posting lands on one partition, in order.
            futs.append(
                await producer.send(config.topics.postings, POSTINGS.encode(p), key=p.job_id.encode(), headers=headers)
            )
            n += 1
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return n


async def publish_requests(source: ConfigSource, requests: Iterable[ScoreRequest], lane: Lane = "online") -> None:
    """Publish requests without waiting for their answers (see `ScoringClient` to await them)."""
    config = as_config(source)
    producer = make_producer(config)
    await producer.start()
    try:
        topic = config.topics.requests_bulk if lane == "bulk" else config.topics.requests
        headers = message_headers(_REQUEST_TAG)
        futs = [
            await producer.send(topic, SCORE_REQUESTS.encode(r), key=r.request_id.encode(), headers=headers)
            for r in requests
        ]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def tail(
    source: ConfigSource,
    spec: TopicSpec[Any],
    from_beginning: bool = False,
    limit: int | None = None,
    idle_exit_s: float | None = None,
) -> AsyncIterator[tuple[ConsumerRecord, Any]]:
    """Yield ``(record, decoded message or SchemaError)`` from every partition of a topic: at most ``limit``
    records, and when ``idle_exit_s`` is given, until nothing has arrived for that long."""
    config = as_config(source)
    n = 0
    async with TopicReader(config, "tail") as reader:
        await reader.follow([config.topics.of(spec)], from_beginning=from_beginning)
        idle_since = time.monotonic()
        while limit is None or n < limit:
            batch = await reader.consumer.getmany(timeout_ms=500)
            if not batch:
                if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    return
                continue
            idle_since = time.monotonic()
            for records in batch.values():
                for rec in records:
                    msg: Any
                    try:
                        # Dead letters are read whichever version wrote them (the value is the original in v2).
                        if spec is DEAD_LETTERS:
                            msg = read_dead_letter(rec.key, rec.value, rec.headers)
                        else:
                            msg = spec.decode(rec.value)
                    except SchemaError as e:
                        msg = e
                    yield rec, msg
                    n += 1
                    # Checked per record: one fetch can bring many (the loop's own check would let them all out).
                    if limit is not None and n >= limit:
                        return


class ScoringClient:
    """Publish scoring requests and await their rankings (module docstring). Use as an async context.

    ``reply_topic``: read answers there instead of the deployment's rankings topic (the worker publishes
    each ranking to its request's ``reply_topic``). ``lane="bulk"`` publishes to the bulk lane, served only
    with the workers' spare capacity (backfills). ``result_ttl_s``/``max_tracked`` bound what it remembers.
    """

    def __init__(
        self,
        source: ConfigSource,
        *,
        reply_topic: str | None = None,
        lane: Lane = "online",
        result_ttl_s: float = 600.0,
        max_tracked: int = 100_000,
    ) -> None:
        self.config = as_config(source)
        # The reply topic must exist (docs/publishing.md "Reply topics"); its name is checked here already.
        self.reply_topic = check_topic_name(reply_topic) if reply_topic is not None else None
        # Online requests are served first; "bulk" (backfills) uses the worker's spare capacity only.
        self._requests_topic = self.config.topics.of(SCORE_REQUESTS_BULK if lane == "bulk" else SCORE_REQUESTS)
        self._producer: AIOKafkaProducer | None = None
        self.reader = ResultsReader(self.config, reply_topic, ttl_s=result_ttl_s, max_tracked=max_tracked)

    @property
    def stats(self) -> ReaderStats:
        return self.reader.stats

    async def __aenter__(self) -> ScoringClient:
        producer = make_producer(self.config)
        try:
            await producer.start()
            await self.reader.start()
        except (KafkaConnectionError, asyncio.TimeoutError) as e:
            await producer.stop()
            raise BrokerUnavailable("", unreachable_message(self.config)) from e
        self._producer = producer
        return self

    async def __aexit__(self, *exc: object) -> None:
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
            if isinstance(o, (Ranking, ScoringError)):
                out.append(o)
            else:
                raise o
        return out

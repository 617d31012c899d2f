"""Issue 18 findings 1, 2, 5, 6 (bytes limits): poison pills never stop a partition, timeouts agree.

Real broker, real Redis, the real vLLM engine on the tiny model. Each poison record is sent to partition 0
*before* a good one on the same partition: the good one is answered only if the partition keeps flowing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from client import RankingWaiter, new_request, tail
from engine.corpus import postings
from jobscore.cache import SummaryCache
from jobscore.kafka import dead_letter, make_consumer, make_producer
from jobscore.settings import CommonSettings, SummarizerSettings, WorkerSettings
from schemas import DEAD_LETTERS, POSTINGS, SCORE_REQUESTS, DeadLetter, JobPosted
from schemas.messages import MAX_DESCRIPTION_CHARS
from schemas.topics import MAX_RECORD_BYTES
from summarizer.service import Summarizer
from summarizer.writer import build_records
from tests.conftest import WAIT_S, wait_until
from tests.helpers import running
from worker.loop import Worker

BIG = 6_500_000  # a 6.5 MB record: over every topic's limit, under the clients' fetch size


async def send_raw(s: CommonSettings, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
    """Send (key, value) pairs to partition 0, in order, one acknowledged send each."""
    producer = make_producer(s)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key, partition=0)
    finally:
        await producer.stop()


async def dead_letters(s: CommonSettings, n: int) -> dict[bytes | None, DeadLetter]:
    letters = [m async for _, m in tail(s, DEAD_LETTERS, from_beginning=True, limit=n, idle_exit_s=WAIT_S)]
    return {m.key: m for m in letters if isinstance(m, DeadLetter)}


async def seed(s: WorkerSettings, items: Sequence[JobPosted]) -> None:
    cache = SummaryCache.from_url(s.redis_url, s.summarizer_version)
    await cache.write(build_records(items, s.summarizer_version, 128))
    await cache.close()


def request_bytes(request_id: str, query: bytes, candidates: Sequence[str]) -> bytes:
    """A request's JSON with raw bytes in the query (json.dumps would refuse invalid UTF-8)."""
    cands = json.dumps(list(candidates)).encode()
    return (
        b'{"schema":"score_request.v1","request_id":"' + request_id.encode() + b'","query":"' + query + b'",'
        b'"candidates":' + cands + b"}"
    )


pytestmark = pytest.mark.engine


class TestPoisonWorker:
    async def test_invalid_utf8_request_dead_lettered_partition_keeps_flowing(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        ws = worker_settings()
        items = postings(3, seed=21, prefix=f"{ws.group_id}-job")
        await seed(ws, items)
        ids = [p.job_id for p in items]
        good = new_request("cafe manager", ids, top_k=2)
        async with running(Worker(ws, vllm_engine), faults=True) as task, RankingWaiter(ws) as waiter:
            await send_raw(
                ws,
                ws.topic_requests,
                [
                    (b"utf8", request_bytes("bad-utf8", b"caf\xc3\x28", ids)),
                    (good.request_id.encode(), SCORE_REQUESTS.encode(good)),
                ],
            )
            ranking = await waiter.wait(good.request_id, WAIT_S)
            assert not task.done(), "the worker keeps running after an invalid UTF-8 request"
        assert ranking.status == "ok" and len(ranking.results) == 2
        dl = (await dead_letters(ws, 1))[b"utf8"]
        assert dl.error_type == "malformed" and "UTF-8" in dl.reason and dl.stage == "worker"
        assert dl.dead_letter_id == f"{ws.topic_requests}:0:{dl.offset}:worker" and not dl.truncated

    async def test_oversized_request_dead_lettered_cut_to_budget_next_answered(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        budget = 100_000
        ws = worker_settings(dead_letter_max_original_bytes=budget)
        items = postings(3, seed=22, prefix=f"{ws.group_id}-job")
        await seed(ws, items)
        good = new_request("welder", [p.job_id for p in items], top_k=3)
        huge = request_bytes("huge", b"x" * BIG, [p.job_id for p in items])
        async with running(Worker(ws, vllm_engine), faults=True) as task, RankingWaiter(ws) as waiter:
            await send_raw(
                ws, ws.topic_requests, [(b"huge", huge), (good.request_id.encode(), SCORE_REQUESTS.encode(good))]
            )
            ranking = await waiter.wait(good.request_id, WAIT_S)
            assert not task.done(), "the worker keeps running after a 6.5 MB request"
        assert ranking.status == "ok"
        dl = (await dead_letters(ws, 1))[b"huge"]
        assert dl.error_type == "oversized" and dl.truncated
        assert dl.original == huge[:budget] and dl.original_size == len(huge)
        assert dl.original_sha256 == hashlib.sha256(huge).hexdigest()


class TestPoisonSummarizer:
    async def test_invalid_utf8_and_oversized_postings_dead_lettered_good_one_written(
        self, summarizer_settings: Callable[..., SummarizerSettings], topics: CommonSettings
    ) -> None:
        s = summarizer_settings(extractive_embeddings=False)
        good = postings(1, seed=23, prefix=f"{s.group_id}-job")[0]
        bad_utf8 = b'{"schema":"job_posted.v1","job_id":"u1","title":"caf\xc3\x28","description":"x"}'
        huge = b'{"schema":"job_posted.v1","job_id":"big","description":"' + b"y" * BIG + b'"}'
        cache = SummaryCache.from_url(s.redis_url, s.summarizer_version)
        try:
            async with running(Summarizer(s), faults=True) as task:
                await send_raw(
                    s,
                    s.topic_postings,
                    [(b"u1", bad_utf8), (b"big", huge), (good.job_id.encode(), POSTINGS.encode(good))],
                )

                async def written() -> bool:
                    return (await cache.get_many([good.job_id]))[0] is not None

                await wait_until(written, what="the good posting's summary after two poison postings")
                assert not task.done(), "the summarizer keeps running after poison postings"
        finally:
            await cache.close()
        letters = await dead_letters(s, 2)
        assert letters[b"u1"].error_type == "malformed" and letters[b"u1"].stage == "summarizer"
        big = letters[b"big"]
        assert big.error_type == "oversized" and big.truncated and big.original_size == len(huge)
        assert len(big.original) == s.dead_letter_max_original_bytes


class TestDeadLetterSize:
    def test_worst_case_dead_letter_fits_topic_and_clients(self) -> None:
        from aiokafka.structs import ConsumerRecord

        rec = ConsumerRecord(
            topic="t" * 249,
            partition=7,
            offset=123,
            timestamp=0,
            timestamp_type=0,
            key=b"k" * 1_000_000,
            value=b"\x00" * MAX_RECORD_BYTES,
            checksum=None,
            serialized_key_size=0,
            serialized_value_size=0,
            headers=(),
        )
        dl = dead_letter(rec, "worker", "\x00" * 10_000, "oversized")
        encoded = DEAD_LETTERS.encode(dl)
        assert len(encoded) <= DEAD_LETTERS.max_bytes < MAX_RECORD_BYTES
        assert dl.truncated and dl.original_size == MAX_RECORD_BYTES
        # Stable across replays: consumers dedupe on it.
        assert dl.dead_letter_id == dead_letter(rec, "worker", "again", "oversized").dead_letter_id

    def test_posting_at_char_cap_escaped_worst_case_within_byte_cap(self) -> None:
        # 100,000 astral characters, each escaped as a surrogate pair by an ensure_ascii JSON encoder.
        doc = {"schema": "job_posted.v1", "job_id": "j", "title": "\U0001f600" * 512, "description": "\U0001f600"}
        doc["description"] = "\U0001f600" * MAX_DESCRIPTION_CHARS
        raw = json.dumps(doc, ensure_ascii=True).encode()
        assert len(raw) > 1_000_000  # the old byte cap would have called this valid posting oversized
        assert POSTINGS.decode(raw).description == doc["description"]


class TestTimeoutSettings:
    async def test_consumer_rebalance_timeout_covers_the_drain(self) -> None:
        w = WorkerSettings(drain_timeout_s=45, max_poll_interval_ms=120_000)
        consumer = make_consumer(w, "g")
        try:
            # aiokafka's default (None) is the session timeout: a 45 s drain would be evicted mid-handover.
            assert consumer._rebalance_timeout_ms > 45_000 > w.session_timeout_ms
            assert consumer._max_poll_interval_ms == 120_000
            assert consumer._heartbeat_interval_ms * 3 <= consumer._session_timeout_ms
        finally:
            await consumer.stop()

    @pytest.mark.parametrize(
        ("kwargs", "says"),
        [
            ({"heartbeat_interval_ms": 5_000, "session_timeout_ms": 10_000}, "lower heartbeat_interval_ms"),
            ({"drain_timeout_s": 60, "rebalance_timeout_ms": 30_000}, "raise rebalance_timeout_ms"),
            ({"max_poll_interval_ms": 10_000}, "raise max_poll_interval_ms"),
        ],
    )
    def test_inconsistent_worker_timeouts_rejected_with_what_to_change(self, kwargs: dict[str, Any], says: str) -> None:
        with pytest.raises(ValidationError, match=says):
            WorkerSettings(**kwargs)

    def test_abstractive_batch_longer_than_poll_interval_rejected(self) -> None:
        with pytest.raises(ValidationError, match="postings x 5 s"):
            SummarizerSettings(summarizer_mode="abstractive", summarize_batch_size=64, max_poll_interval_ms=200_000)
        SummarizerSettings(summarizer_mode="abstractive", summarize_batch_size=16, max_poll_interval_ms=200_000)


class TestLogRepeats:
    def test_client_library_error_burst_logged_once_then_counted(self) -> None:
        import logging

        from jobscore.settings import RepeatFilter

        seen: list[logging.LogRecord] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                seen.append(record)

        handler = Keep()
        flt = RepeatFilter(interval_s=30.0)
        handler.addFilter(flt)
        client, ours = logging.getLogger("aiokafka.conn.test"), logging.getLogger("jobscore.test")
        for lg in (client, ours):
            lg.addHandler(handler)
            lg.propagate = False
        try:
            for _ in range(80):  # a second of a dead broker
                client.error("Unable connect to %r", "node-1")
                ours.error("worker failed")
            assert sum(r.name == client.name for r in seen) == 1
            assert sum(r.name == ours.name for r in seen) == 80  # our own lines are never dropped
            flt._last = {k: v - 31 for k, v in flt._last.items()}  # the interval has passed
            client.error("Unable connect to %r", "node-1")
            assert seen[-1].name == client.name and seen[-1].repeated == 79  # type: ignore[attr-defined]
        finally:
            for lg in (client, ours):
                lg.removeHandler(handler)

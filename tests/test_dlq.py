"""`jobscore dlq` against the real broker: listing, showing, and re-driving after a fix (with a worker)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from client import RankingWaiter, new_request, publish_requests
from client.kafka import TopicReader
from engine.corpus import postings
from jobscore.cache import SummaryCache
from jobscore.kafka import make_producer
from jobscore.settings import CommonSettings, WorkerSettings
from ops.dlq import ATTEMPT_HEADER, FROM_HEADER, DeadLetterFilter, read_entries, redrive
from ops.status import redis_url
from schemas import DEAD_LETTERS, SCORE_REQUESTS, DeadLetter
from summarizer.writer import build_records
from tests.conftest import WAIT_S, wait_until
from worker.loop import Worker

ROOT = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def running(w: Worker) -> AsyncIterator[None]:
    await w.start()
    task = asyncio.create_task(w.run())
    try:
        yield
    finally:
        w.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, WAIT_S)
        await w.close()


async def dead_letters(s: CommonSettings, **flt: Any) -> list[Any]:
    return [e async for e in read_entries(s, DeadLetterFilter(**flt))]


async def produce(s: CommonSettings, topic: str, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> int:
    producer = make_producer(s)
    await producer.start()
    try:
        md = await (await producer.send(topic, value, partition=0, headers=headers or []))
        return int(md.offset)
    finally:
        await producer.stop()


async def records(s: CommonSettings, topic: str) -> list[Any]:
    async with TopicReader(s) as r:
        tps = await r.partitions(topic)
        return [rec async for rec in r.read(await r.bounds(tps))]


class TestRedrive:
    @pytest.mark.engine
    async def test_rejected_requests_redriven_to_fixed_worker_get_rankings(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        """Requests over a worker's max_candidates are dead-lettered; after the operator raises the cap, a
        re-drive sends them back and they are ranked."""
        small, fixed = worker_settings(max_candidates=3), worker_settings(max_candidates=50)
        items = postings(6, seed=7, prefix=f"{small.group_id}-job")
        cache = SummaryCache.from_url(redis_url(small), small.summarizer_version)
        await cache.write(build_records(items, small.summarizer_version, 128))
        await cache.close()
        ids = [p.job_id for p in items]
        reqs = [new_request("data engineer", ids, top_k=3, request_id=f"big-{i}") for i in range(3)]
        ok = new_request("nurse", ids[:2], top_k=2, request_id="small-0")

        async with running(Worker(small, vllm_engine)), RankingWaiter(small) as waiter:
            await publish_requests(small, [*reqs, ok])
            first = await waiter.wait_all([r.request_id for r in [*reqs, ok]], WAIT_S)
        assert {r.request_id: r.status for r in first.values()} == {
            "big-0": "rejected",
            "big-1": "rejected",
            "big-2": "rejected",
            "small-0": "ok",
        }
        await wait_until(
            lambda: dead_letters(topics, error_type="oversized"), what="dead letters of the rejected requests"
        )
        letters = await dead_letters(topics, stage="worker", error_type="oversized")
        assert sorted(e.request_id for e in letters) == ["big-0", "big-1", "big-2"]
        assert all(e.original_text and json.loads(e.original_text)["request_id"] == e.request_id for e in letters)

        # A replayed batch dead-letters the same record again: the copy must not be re-driven twice.
        await produce(topics, topics.topic_dead_letters, DEAD_LETTERS.encode(letters[0].letter))

        dry = await redrive(topics, DeadLetterFilter(error_type="oversized"), dry_run=True)
        assert len(dry.sent) == 3 and len(dry.duplicates) == 1
        assert len(await records(topics, topics.topic_requests)) == 4, "a dry run sends nothing"

        async with running(Worker(fixed, vllm_engine)), RankingWaiter(fixed) as waiter:
            rep = await redrive(topics, DeadLetterFilter(error_type="oversized"))
            assert sorted(r.entry.request_id for r in rep.sent) == ["big-0", "big-1", "big-2"]
            assert [r.attempt for r in rep.sent] == [1, 1, 1] and len(rep.duplicates) == 1
            again = await waiter.wait_all(["big-0", "big-1", "big-2"], WAIT_S)
        for r in again.values():
            assert r.status == "ok" and len(r.results) == 3 and r.candidates_total == 6

        resent = [rec for rec in await records(topics, topics.topic_requests) if ATTEMPT_HEADER in dict(rec.headers)]
        assert len(resent) == 3
        by_id = {e.request_id: e.letter for e in letters}
        for rec in resent:
            assert rec.partition == by_id[SCORE_REQUESTS.decode(rec.value).request_id].partition, "same partition"
            h = dict(rec.headers)
            assert h[ATTEMPT_HEADER] == b"1" and h[FROM_HEADER].startswith(topics.topic_dead_letters.encode())
            assert SCORE_REQUESTS.decode(rec.value).request_id.startswith("big-")

    async def test_attempt_counted_from_source_header_and_capped(self, topics: CommonSettings) -> None:
        s = topics
        req = SCORE_REQUESTS.encode(new_request("q", ["a"], request_id="twice"))
        capped = SCORE_REQUESTS.encode(new_request("q", ["a"], request_id="thrice"))
        off_twice = await produce(s, s.topic_requests, req, [(ATTEMPT_HEADER, b"2"), ("traceparent", b"00-ab-cd-01")])
        off_thrice = await produce(s, s.topic_requests, capped, [(ATTEMPT_HEADER, b"3")])
        for value, off in ((req, off_twice), (capped, off_thrice)):
            dl = DeadLetter(
                stage="worker",
                reason="boom",
                error_type="invalid",
                topic=s.topic_requests,
                partition=0,
                offset=off,
                original=value,
                failed_at=time.time(),
            )
            await produce(s, s.topic_dead_letters, DEAD_LETTERS.encode(dl))

        rep = await redrive(s, DeadLetterFilter(error_type="invalid"), max_attempts=3)
        assert [(r.entry.request_id, r.attempt) for r in rep.sent] == [("twice", 3)]
        assert [e.request_id for e in rep.over_cap] == ["thrice"]
        (last,) = [r for r in await records(s, s.topic_requests) if FROM_HEADER in dict(r.headers)]
        assert last.partition == 0, "back to the partition it came from"
        assert dict(last.headers)[ATTEMPT_HEADER] == b"3" and last.value == req
        assert dict(last.headers)["traceparent"] == b"00-ab-cd-01", "the source's other headers travel along"
        assert [k for k, _ in last.headers].count(ATTEMPT_HEADER) == 1


class TestList:
    async def test_ls_filters_and_show_decodes_text(self, topics: CommonSettings) -> None:
        s = topics
        t0 = time.time()
        bad_request = b'{"schema": "score_request.v1", "request_id": "r-1", "query": "", "candidates": ["j-9"]}'
        letters = [
            DeadLetter(
                stage="worker",
                reason="query too short",
                error_type="invalid",
                topic=s.topic_requests,
                partition=0,
                offset=5,
                key=b"r-1",
                original=bad_request,
            ),
            DeadLetter(
                stage="summarizer",
                reason="not valid JSON",
                error_type="malformed",
                topic=s.topic_postings,
                partition=1,
                offset=7,
                key=b"j-2",
                original=b"\xff\xfe binary",
            ),
        ]
        for d in letters:
            await produce(s, s.topic_dead_letters, DEAD_LETTERS.encode(d))

        assert [e.request_id for e in await dead_letters(s, stage="worker")] == ["r-1"]
        assert [e.key_text for e in await dead_letters(s, error_type="malformed")] == ["j-2"]
        assert [e.letter.stage for e in await dead_letters(s, job_id="j-9")] == ["worker"]  # a candidate
        assert len(await dead_letters(s, since=t0 - 60)) == 2
        assert await dead_letters(s, since=time.time() + 60) == []

        env = {
            **os.environ,
            "JOBSCORE_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "JOBSCORE_TOPIC_DEAD_LETTERS": s.topic_dead_letters,
        }
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "app.cli", "dlq", "ls", "--stage", "worker", "--json"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        assert out.returncode == 0, out.stderr
        (row,) = [json.loads(line) for line in out.stdout.splitlines()]
        assert row["id"] == "r-1" and row["error_type"] == "invalid" and row["reason"] == "query too short"

        shown = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "app.cli", "dlq", "show", f"{row['partition']}:{row['offset']}"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        assert shown.returncode == 0, shown.stderr
        doc = json.loads(shown.stdout)
        assert doc["original"]["request_id"] == "r-1" and doc["key"] == "r-1"
        binary = (await dead_letters(s, stage="summarizer"))[0]
        assert binary.original_text is None and "original_base64" in binary.full()

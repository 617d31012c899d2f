"""client.ScoringClient against the real broker (and, where marked, a real worker on the tiny model).

Rankings the reader must cope with are produced directly onto the rankings topic, as any producer could."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from client import (
    BrokerUnavailable,
    DeadLettered,
    RankingWaiter,
    RequestRejected,
    ScoreTimeout,
    ScoringClient,
    new_request,
    tail,
)
from engine.corpus import postings
from jobscore.kafka import make_producer
from jobscore.settings import CommonSettings, WorkerSettings
from jobscore.topics import ensure_topics
from schemas import POSTINGS, RANKINGS, Ranking, ScoredJob, ScoreRequest
from tests.conftest import WAIT_S, wait_until
from tests.helpers import running, seed
from worker.loop import Worker

README = Path(__file__).resolve().parent.parent / "README.md"
SHORT_WAIT_S = 0.3  # a wait meant to time out


async def produce(settings: CommonSettings, topic: str, *values: bytes) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        for v in values:
            await (await producer.send(topic, v, key=b"k"))
    finally:
        await producer.stop()


async def test_tail_stops_at_its_limit_inside_one_fetch(topics: CommonSettings) -> None:
    # Three records on one partition (one key), read back by one fetch: `tail --limit 2` gives two. (It gave all
    # three — the limit was checked per fetch, not per record.)
    await produce(topics, topics.topic_postings, b"a", b"b", b"c")
    got = [rec.value async for rec, _ in tail(topics, POSTINGS, from_beginning=True, limit=2, idle_exit_s=WAIT_S)]
    assert got == [b"a", b"b"]


def ranking_bytes(request_id: str, score: float = 0.5) -> bytes:
    return RANKINGS.encode(Ranking(request_id=request_id, results=[ScoredJob("job-1", score)]))


async def test_reader_skips_undecodable_and_newer_versions_and_counts_them(topics: CommonSettings) -> None:
    async with ScoringClient(topics) as client:
        rid = await client.submit(new_request("q", ["job-1"]))
        await produce(
            topics,
            topics.topic_rankings,
            b"\xff not json",
            b'{"schema": "ranking.v2", "request_id": "' + rid.encode() + b'", "ranked": []}',
            ranking_bytes("someone-elses-request"),
            ranking_bytes(rid, 0.75),
            ranking_bytes(rid, 0.75),  # at-least-once duplicate
        )
        ranking = await client.result(rid, WAIT_S)
        assert ranking.request_id == rid and ranking.results[0].score == 0.75
        await wait_until(lambda: client.stats.duplicates == 1, what="the duplicate to be counted")
        assert client.stats.undecodable == 2
        assert client.stats.unknown == 1
        assert client.stats.delivered == 1
        assert len(client.reader) == 0, "a collected id must not stay tracked"


async def test_wait_timed_out_then_retried_on_same_id_gets_ranking(topics: CommonSettings) -> None:
    async with ScoringClient(topics) as client:
        rid = await client.submit(new_request("q", ["job-1"]))
        with pytest.raises(ScoreTimeout) as e:
            await client.result(rid, SHORT_WAIT_S)
        assert e.value.request_id == rid
        await produce(topics, topics.topic_rankings, ranking_bytes(rid))
        assert (await client.result(rid, WAIT_S)).request_id == rid
    # The older observer too: a second wait on the same id after a timeout (was CancelledError).
    async with RankingWaiter(topics) as waiter:
        with pytest.raises(TimeoutError):
            await waiter.wait("late-1", SHORT_WAIT_S)
        await produce(topics, topics.topic_rankings, b"garbage", ranking_bytes("late-1"))
        assert (await waiter.wait("late-1", WAIT_S)).request_id == "late-1"
        assert waiter.undecodable == 1


async def test_tracking_bounded_by_count_and_ttl(topics: CommonSettings) -> None:
    async with ScoringClient(topics, result_ttl_s=1.0, max_tracked=3) as client:
        ids = [await client.submit(new_request("q", ["job-1"])) for _ in range(5)]
        assert len(client.reader) == 3 and client.stats.expired == 2
        with pytest.raises(Exception, match="not tracked"):
            await client.result(ids[0], SHORT_WAIT_S)
        # Past the TTL, uncollected ids are dropped by the reader on its own.
        await wait_until(lambda: len(client.reader) == 0, what="tracked ids to expire")
        assert client.stats.expired == 5
        # A ranking for an expired id is dropped, not kept.
        await produce(topics, topics.topic_rankings, ranking_bytes(ids[-1]))
        await wait_until(lambda: client.stats.unknown == 1, what="the stale ranking to be dropped")
        assert len(client.reader) == 0


async def test_unreachable_broker_raises_broker_unavailable(topics: CommonSettings) -> None:
    dead = topics.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="could not connect to Kafka"):
        async with ScoringClient(dead):
            pass
    assert time.monotonic() - t0 < WAIT_S


def readme_client_snippets() -> list[str]:
    section = README.read_text().split("## Publishing requests", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)\n```", section, re.S)
    assert len(blocks) == 2, "the async example and the blocking one"
    return blocks


@pytest.mark.engine
async def test_client_against_worker_readme_example_reply_topic_and_typed_errors(
    vllm_engine: Any,
    worker_settings: Callable[..., WorkerSettings],
    topics: CommonSettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ws = worker_settings(max_candidates=5)
    items = postings(3, seed=1, prefix="job")  # job-000000..2, as in the README example
    await seed(ws, items)
    reply = f"{ws.topic_rankings}.reply"
    await ensure_topics(ws, [reply])
    async with running(Worker(ws, vllm_engine)):
        # 1. The README snippets, run as written (their own event loop in a thread), config from the env.
        env = {
            "KAFKA_BOOTSTRAP": ws.kafka_bootstrap,
            "TOPIC_REQUESTS": ws.topic_requests,
            "TOPIC_RANKINGS": ws.topic_rankings,
            "TOPIC_DEAD_LETTERS": ws.topic_dead_letters,
        }
        for name, value in env.items():
            monkeypatch.setenv(f"JOBSCORE_{name}", value)
        async_code, sync_code = readme_client_snippets()
        await asyncio.to_thread(exec, compile(async_code, "README.md", "exec"), {"__name__": "readme"})
        printed = capsys.readouterr().out.split("\n")
        assert len([line for line in printed if line.startswith("job-0000")]) == 2, printed
        await asyncio.to_thread(exec, compile(sync_code, "README.md", "exec"), {"__name__": "readme"})
        printed = capsys.readouterr().out.strip().split("\n")
        assert printed[-1].startswith("['job-0000") and printed[-1].count("job-0000") == 2, printed
        for name in env:
            monkeypatch.delenv(f"JOBSCORE_{name}")

        async with ScoringClient(ws, reply_topic=reply) as client:
            # 2. reply_topic: the answer comes on the caller's topic (the reader reads only that one).
            ranking = await client.score("nurse", [p.job_id for p in items], top_k=2, timeout=WAIT_S)
            assert len(ranking.results) == 2 and client.reader.topic == reply
            # 3. score_many, with a rejected and a dead-lettered request among good ones.
            outcomes = await client.score_many(
                [("python", [items[0].job_id]), ("chef", [f"job-{i}" for i in range(6)])], timeout=WAIT_S
            )
            assert isinstance(outcomes[0], Ranking) and isinstance(outcomes[1], RequestRejected)
            assert "max_candidates" in str(outcomes[1])
            # An empty query breaks the schema: the worker dead-letters it, and the client says so.
            bad = ScoreRequest(request_id=f"bad-{os.getpid()}", query="", candidates=[items[0].job_id])
            rid = await client.submit(bad)
            with pytest.raises(DeadLettered) as e:
                await client.result(rid, WAIT_S)
            assert e.value.error_type == "invalid" and "query" in e.value.reason

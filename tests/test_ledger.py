"""`jobscore ledger` (ops/ledger.py) against the real broker, Redis and a real worker on the tiny model."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from client import RankingWaiter, new_request, publish_postings, publish_requests
from engine.corpus import postings, queries
from jobscore.kafka import make_producer
from jobscore.settings import CommonSettings, WorkerSettings
from ops.devstack import EmbeddedBroker
from ops.ledger import Window, postings_ledger, read_topic, request_ledger
from schemas import RANKINGS, JobPosted
from tests.conftest import WAIT_S, plain
from tests.helpers import running, seed
from worker.loop import Worker

pytestmark = pytest.mark.engine


class TestWindow:
    def test_window_admits_by_time_and_prefix(self) -> None:
        w = Window(since=100.0, until=200.0, id_prefix="run-")
        assert w.admits(150_000, "run-1")
        assert not w.admits(150_000, "other-1")
        assert not w.admits(99_000, "run-1") and not w.admits(201_000, "run-1")
        assert not w.admits(150_000, None)


class TestReadTopic:
    async def test_reads_every_record_to_the_fetch_watermark_where_list_offsets_is_short(self) -> None:
        """The ledger's reader on an embedded broker of its own, whose ListOffsets is short after batched
        produces and after a restart (writes to the missing topic are kept): every record the broker holds is
        read, with no idle grace at all. (The reader that trusted ListOffsets plus a 0.5 s grace reported a
        ranking as lost in a clean-clone CI run: tests/faults/test_dependency_faults.py TestBrokerRestart.)"""
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        own = EmbeddedBroker().start()
        topic, parts = "ledger-read", 4
        sent: list[bytes] = []

        async def create() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=own.bootstrap)
            await admin.start()
            try:
                await admin.create_topics([NewTopic(topic, parts, 1)])
            finally:
                await admin.close()

        async def produce(tag: str, n: int) -> None:
            # linger: the records of one wave go out as one batch per partition.
            producer = AIOKafkaProducer(bootstrap_servers=own.bootstrap, linger_ms=50)
            await producer.start()
            try:
                values = [f"{tag}{i}".encode() for i in range(n)]
                await asyncio.gather(
                    *[await producer.send(topic, v, partition=i % parts) for i, v in enumerate(values)]
                )
                sent.extend(values)
            finally:
                await producer.stop()

        try:
            await create()
            for wave in range(3):
                await produce(f"w{wave}-", 9 + 4 * wave)
            own.restart()  # memory-only: the topic is gone; the next writes are acked and kept
            sent.clear()
            await produce("ghost-", parts)
            await create()
            await produce("after-", 12)

            probe = AIOKafkaConsumer(bootstrap_servers=own.bootstrap, group_id=None)
            await probe.start()
            try:
                listed = await probe.end_offsets([TopicPartition(topic, p) for p in range(parts)])
            finally:
                await probe.stop()
            assert sum(listed.values()) < len(sent), "ListOffsets was exact: this broker no longer has the quirk"

            got: list[bytes] = []
            read = await read_topic(
                CommonSettings(kafka_bootstrap=own.bootstrap), topic, lambda r: got.append(r.value), 0.0
            )
            assert read.complete and read.records == len(sent)
            assert sorted(got) == sorted(sent)
        finally:
            own.stop()


class TestRequestLedger:
    async def test_ledger_counts_answered_dead_lettered_unanswered_and_duplicates(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        ws = worker_settings()
        run = f"{ws.group_id}-"
        items = postings(4, seed=31, prefix=f"{ws.group_id}-job")
        await seed(ws, items)
        ids = [p.job_id for p in items]
        answered = [new_request(q, ids, top_k=2, request_id=f"{run}a{i}") for i, q in enumerate(queries(5, seed=31))]
        other = new_request("not in this run", ids, request_id="someone-else-1")
        async with RankingWaiter(ws) as waiter:
            producer = make_producer(ws)
            await producer.start()
            try:
                # Poison keyed by a run id: undecodable, so the ledger names it by its record position.
                await producer.send_and_wait(ws.topic_requests, b"\xff not json", key=f"{run}bad".encode())
                async with running(Worker(ws, vllm_engine)):
                    await publish_requests(ws, [*answered, other])
                    got = await waiter.wait_all([r.request_id for r in answered], WAIT_S)
                # A replay after a crash republishes the same ranking: a duplicate, not a second answer.
                await producer.send_and_wait(
                    ws.topic_rankings, RANKINGS.encode(got[answered[0].request_id]), key=answered[0].request_id.encode()
                )
            finally:
                await producer.stop()
        # No worker running from here on: these stay unanswered.
        cut = time.time()
        late = [new_request(q, ids, request_id=f"{run}u{i}") for i, q in enumerate(queries(2, seed=32))]
        await publish_requests(ws, late)

        led = await request_ledger(ws, Window(id_prefix=run), idle_s=0.5)
        print("\n" + led.render())
        assert led.sent == 5 + 1 + 2 and led.undecodable == 1
        assert led.answered == 5 and led.statuses == {"ok": 5}
        assert led.dead_lettered == 1 and led.dead_letter_kinds == {"malformed": 1}
        assert led.unanswered == 2 and sorted(led.unanswered_ids) == sorted(r.request_id for r in late)
        assert led.duplicates == 1
        assert all(r.complete for r in led.reads)

        # The time window: everything before `cut` is out, only the two late requests remain.
        led_late = await request_ledger(ws, Window(since=cut), idle_s=0.5)
        assert led_late.sent == 2 and led_late.unanswered == 2 and led_late.answered == 0

        # The command: same figures as JSON, exit code 1 because something is unanswered.
        env = {
            **os.environ,
            "JOBSCORE_KAFKA_BOOTSTRAP": ws.kafka_bootstrap,
            "JOBSCORE_REDIS_URL": plain(ws.redis_url),
            "JOBSCORE_TOPIC_REQUESTS": ws.topic_requests,
            "JOBSCORE_TOPIC_RANKINGS": ws.topic_rankings,
            "JOBSCORE_TOPIC_DEAD_LETTERS": ws.topic_dead_letters,
        }
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "app.cli", "ledger", "--run-id-prefix", run, "--json", "--idle-s", "0.5"],
            env=env,
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        assert proc.returncode == 1, proc.stderr[-2000:]
        doc = json.loads(proc.stdout)
        assert (doc["sent"], doc["answered"], doc["dead_lettered"], doc["unanswered"], doc["duplicates"]) == (
            8,
            5,
            1,
            2,
            1,
        )
        assert sorted(doc["unanswered_ids"]) == sorted(r.request_id for r in late) and doc["lost"] == 2


class TestPostingsLedger:
    async def test_postings_ledger_counts_summarized_stale_missing(
        self, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        ws = worker_settings()
        items = postings(5, seed=33, prefix=f"{ws.group_id}-job")
        await seed(ws, items[:3])  # summaries for three of them
        changed = JobPosted(**{**_fields(items[0]), "description": items[0].description + " Now remote."})
        gone = JobPosted(job_id=items[1].job_id, deleted=True, posted_at=time.time())
        await publish_postings(ws, [*items, changed, gone])
        led = await postings_ledger(ws, Window(), ws.summarizer_version, idle_s=0.5)
        print("\n" + led.render())
        assert led.postings == 5 and led.live == 4 and led.withdrawn == 1
        assert led.summarized == 1 and led.stale == 1  # items[2] current; items[0] changed after its summary
        assert led.missing == 2 and sorted(led.missing_ids) == sorted(p.job_id for p in items[3:])
        assert led.withdrawn_still_cached == 1


def _fields(p: JobPosted) -> dict[str, Any]:
    import msgspec

    return msgspec.structs.asdict(p)

"""`jobscore status` against the real broker and Redis: lag equals what the test produced and consumed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from client import new_request
from jobscore.cache import SummaryCache
from jobscore.kafka import make_consumer, make_producer
from jobscore.settings import CommonSettings
from ops.status import GroupSpec, collect_status, default_groups, redis_url, render_text
from schemas import DEAD_LETTERS, RANKINGS, SCORE_REQUESTS, DeadLetter, Ranking
from schemas.summary import SummaryRecord
from tests.conftest import WAIT_S

ROOT = Path(__file__).resolve().parent.parent

# Per partition: candidates of each request produced there, and how many of them the group consumes.
PRODUCED = {0: [3, 5, 7, 11, 13], 1: [2, 4, 6]}
CONSUMED = {0: 2, 1: 0}


async def produce_requests(s: CommonSettings) -> None:
    """One batched produce per partition: exactly what makes tansu's ListOffsets(latest) report too low."""
    producer = make_producer(s, linger_ms=50)
    await producer.start()
    try:
        futs = []
        for part, counts in PRODUCED.items():
            for i, n in enumerate(counts):
                req = new_request("q", [f"j{k}" for k in range(n)], request_id=f"r{part}-{i}")
                futs.append(await producer.send(s.topic_requests, SCORE_REQUESTS.encode(req), partition=part))
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def consume_and_commit(s: CommonSettings, group: str) -> None:
    """Read the first CONSUMED[p] records of each partition as the group and commit after them."""
    consumer = make_consumer(s, group)
    await consumer.start()
    try:
        for part, k in CONSUMED.items():
            if not k:
                continue
            tp = TopicPartition(s.topic_requests, part)
            consumer.assign([tp])
            consumer.seek(tp, 0)
            got: list[int] = []
            async with asyncio.timeout(WAIT_S):
                while len(got) < k:
                    for recs in (await consumer.getmany(tp, timeout_ms=500, max_records=k - len(got))).values():
                        got += [r.offset for r in recs]
            await consumer.commit({tp: got[k - 1] + 1})
    finally:
        await consumer.stop()


async def produce_outputs(s: CommonSettings, run: str) -> None:
    producer = make_producer(s)
    await producer.start()
    try:
        futs = []
        for i in range(6):
            r = Ranking(request_id=f"x{i}", model_id="tiny", model_revision="rev1", summarizer_version=f"v-{run}")
            futs.append(await producer.send(s.topic_rankings, RANKINGS.encode(r)))
        for i, (stage, et) in enumerate([("worker", "malformed"), ("worker", "malformed"), ("summarizer", "invalid")]):
            dl = DeadLetter(stage=stage, reason="r", error_type=et, topic="t", partition=0, offset=i, original=b"{")  # type: ignore[arg-type]
            futs.append(await producer.send(s.topic_dead_letters, DEAD_LETTERS.encode(dl)))
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def seed_cache(s: CommonSettings, version: str, n: int) -> None:
    cache = SummaryCache.from_url(redis_url(s), version)
    recs = [
        SummaryRecord(
            job_id=f"j{i}",
            version=version,
            mode="extractive",
            summary="s",
            content_hash="h",
            raw_tokens=1,
            summary_tokens=1,
            created_at=time.time(),
        )
        for i in range(n)
    ]
    await cache.write(recs)
    await cache.close()


class TestStatus:
    async def test_status_lag_matches_produced_and_consumed(
        self, topics: CommonSettings, names: dict[str, str]
    ) -> None:
        s, run = topics, names["run"]
        group = f"g-{run}"
        await produce_requests(s)
        await consume_and_commit(s, group)
        await produce_outputs(s, run)
        await seed_cache(s, f"v-{run}", 4)

        st = await collect_status(s, [GroupSpec(group, "worker", (s.topic_requests,), (s.topic_requests,))])

        (g,) = st.groups
        by_part = {p.partition: p for p in g.partitions}
        for part, counts in PRODUCED.items():
            p = by_part[part]
            k = CONSUMED[part]
            assert p.end == len(counts), f"end offset of partition {part} (tansu's ListOffsets is too low)"
            assert p.committed == (k if k else None)
            assert p.lag == len(counts) - k
            assert p.pairs == sum(counts[k:]) and not p.pairs_estimated
        assert g.lag == 6 and g.pairs == 7 + 11 + 13 + 2 + 4 + 6
        assert st.rankings_per_s == pytest.approx(6 / st.window_s)
        assert st.dead_letters_per_s == pytest.approx(3 / st.window_s)
        assert {(d.stage, d.error_type): d.count for d in st.dead_letters} == {
            ("worker", "malformed"): 2,
            ("summarizer", "invalid"): 1,
        }
        assert [(m.model_id, m.model_revision, m.summarizer_version, m.rankings) for m in st.made_by] == [
            ("tiny", "rev1", f"v-{run}", 6)
        ]
        assert {c.version: c.entries for c in st.cache}[f"v-{run}"] == 4

        assert not [n for n in st.notes if "lower bound" in n], "everything was read: the rates are exact"
        capped = await collect_status(s, [GroupSpec(group, "worker", (s.topic_requests,))], recent=2)
        assert any(n.startswith("rankings/s is a lower bound") for n in capped.notes), capped.notes
        assert capped.rankings_per_s < st.rankings_per_s

        text = render_text(st)
        assert f"GROUP {group}" in text and "LAG-PAIRS" in text and f"v-{run}" in text
        assert json.loads(json.dumps(st.to_dict()))["groups"][0]["lag"] == 6

    async def test_pairs_estimated_past_scan_bound(self, topics: CommonSettings, names: dict[str, str]) -> None:
        s = topics
        await produce_requests(s)
        spec = GroupSpec(f"g-{names['run']}", "worker", (s.topic_requests,), (s.topic_requests,))
        st = await collect_status(s, [spec], pair_scan=2)
        p0 = next(p for p in st.groups[0].partitions if p.partition == 0)
        # 2 of 5 read (3 + 5 candidates): 4 per request on average, x 5 pending.
        assert p0.lag == 5 and p0.pairs == 20 and p0.pairs_estimated

    def test_default_groups_cover_every_request_lane(self, topics: CommonSettings) -> None:
        (w, sm) = default_groups(topics)
        assert topics.topic_requests in w.request_lanes and w.topics == w.request_lanes
        assert sm.topics == (topics.topic_postings,) and not sm.request_lanes

    async def test_cli_status_json_and_text(self, topics: CommonSettings, names: dict[str, str]) -> None:
        s = topics
        group = f"g-{names['run']}"
        await produce_requests(s)
        env = {
            **os.environ,
            "JOBSCORE_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "JOBSCORE_REDIS_URL": redis_url(s),
            "JOBSCORE_TOPIC_REQUESTS": s.topic_requests,
            # Every topic status reads is this test's: a look-up no longer creates a missing one.
            "JOBSCORE_TOPIC_REQUESTS_BULK": s.topic_requests_bulk,
            "JOBSCORE_TOPIC_POSTINGS": s.topic_postings,
            "JOBSCORE_TOPIC_RANKINGS": s.topic_rankings,
            "JOBSCORE_TOPIC_DEAD_LETTERS": s.topic_dead_letters,
        }
        cmd = [sys.executable, "-m", "app.cli", "status", "--worker-group", group]
        out = await asyncio.to_thread(
            subprocess.run, [*cmd, "--json"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=WAIT_S
        )
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        worker = next(g for g in doc["groups"] if g["role"] == "worker")
        assert worker["group"] == group and worker["lag"] == 8 and worker["pairs"] == sum(map(sum, PRODUCED.values()))
        txt = await asyncio.to_thread(
            subprocess.run, cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=WAIT_S
        )
        assert txt.returncode == 0, txt.stderr
        assert f"GROUP {group} (worker" in txt.stdout and "lag 8 records" in txt.stdout

    async def test_cli_watch_refreshes_until_ctrl_c(self, topics: CommonSettings) -> None:
        s = topics
        env = {**os.environ, "JOBSCORE_KAFKA_BOOTSTRAP": s.kafka_bootstrap, "JOBSCORE_REDIS_URL": redis_url(s)}
        topic_fields = (
            "topic_requests",
            "topic_requests_bulk",
            "topic_postings",
            "topic_rankings",
            "topic_dead_letters",
        )
        env |= {f"JOBSCORE_{k.upper()}": getattr(s, k) for k in topic_fields}
        env |= {f"JOBSCORE_{k.upper()}": getattr(s, k) for k in ("topic_rankings", "topic_dead_letters")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app.cli", "status", "--watch", "0.2", "--json",
            env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        async with asyncio.timeout(WAIT_S):
            looks = [json.loads(await proc.stdout.readline()) for _ in range(2)]
        assert looks[1]["at"] > looks[0]["at"], "--watch looks again"
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0, "Ctrl-C ends the watch cleanly"


class TestMembers:
    async def test_assignment_decoded_from_a_describe_groups_response(self) -> None:
        """Real Kafka reports each member's assignment as consumer-protocol bytes (tansu sends none): the
        same bytes aiokafka's coordinator encodes are decoded into topic[partition] names."""
        from types import SimpleNamespace

        from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

        from ops.status import _members

        blob = ConsumerProtocolMemberAssignment(0, [("jobscore.requests", [3, 1])], b"").encode()
        member = ("m-1", "jobscore-consumer", "/10.0.0.7", b"", blob)  # DescribeGroups v0-v3 member layout
        silent = ("m-2", "jobscore-consumer", "/10.0.0.8", b"", b"")  # what tansu sends: no assignment

        class Admin:
            async def describe_consumer_groups(self, groups: list[str]) -> list[Any]:
                return [SimpleNamespace(groups=[(0, groups[0], "Stable", "consumer", "range", [member, silent])])]

        state, members = await _members(Admin(), "g")
        assert state == "Stable"
        assert members[0].assignment == ("jobscore.requests[1]", "jobscore.requests[3]")
        assert (members[0].client_id, members[0].host) == ("jobscore-consumer", "/10.0.0.7")
        assert members[1].member_id == "m-2" and members[1].host == "/10.0.0.8" and members[1].assignment == ()

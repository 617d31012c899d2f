"""Summary readiness (issue 30): the summarizer publishes one ``job_summarized.v1`` per posting it makes
scorable — written, already summarized in the same content, or withdrawn — on the compacted summaries topic,
before committing the posting. A client knows its postings are scorable without Redis: with
`client.wait_summarized`, or from the contract alone (a librdkafka consumer, the committed JSON Schema and the
documented content-hash rule)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from client import NotSummarized, publish_postings, wait_summarized
from engine.corpus import postings
from jobscore.settings import CommonSettings, SummarizerSettings
from jobscore.topics import plan_topics
from schemas import SUMMARIES, JobPosted
from schemas.summary import content_hash
from summarizer.service import Summarizer
from tests.conftest import WAIT_S
from tests.helpers import running

CONTRACT = Path(__file__).resolve().parent.parent / "schemas" / "contract"


def documented_hash(p: dict[str, Any]) -> str:
    """The content hash as the contract describes it (asyncapi.yaml, summaries channel), written from the text."""
    h = hashlib.sha256()
    for field in ("title", "company", "location", "description"):
        h.update(str(p.get(field, "")).encode("utf-8") + b"\x1f")
    return h.hexdigest()[:32]


def test_summaries_topic_is_planned_compacted() -> None:
    s = CommonSettings()
    planned = plan_topics(s).by_name(s.topic_summaries)
    assert planned is not None and planned.role == SUMMARIES.role
    assert planned.configs["cleanup.policy"] == "compact" and "retention.ms" not in planned.configs


async def test_wait_summarized_sees_new_unchanged_and_withdrawn_postings(
    summarizer_settings: Callable[..., SummarizerSettings], topics: CommonSettings
) -> None:
    s = summarizer_settings()
    items = postings(4, seed=31, prefix=f"{s.group_id}-job")
    async with running(Summarizer(s)):
        await publish_postings(s, items)
        first = await wait_summarized(s, items, WAIT_S)
        assert {j: e.content_hash for j, e in first.items()} == {p.job_id: content_hash(p) for p in items}
        assert all(e.summarizer_version == s.summarizer_version and not e.deleted for e in first.values())
        # Re-posted unchanged (nothing re-summarized), one edited, one withdrawn: each gets its event.
        edited = msgspec.structs.replace(items[1], description=items[1].description + " Remote work possible.")
        withdrawn = JobPosted(job_id=items[2].job_id, deleted=True)
        await publish_postings(s, [items[0], edited, withdrawn])
        later = await wait_summarized(s, [edited, withdrawn.job_id], WAIT_S)
        assert later[edited.job_id].content_hash == content_hash(edited) != content_hash(items[1])
        assert later[withdrawn.job_id].deleted
    # A posting nobody published is reported by id once the wait runs out.
    with pytest.raises(NotSummarized) as e:
        await wait_summarized(s, [f"{s.group_id}-never-posted"], 1.0)
    assert e.value.missing == [f"{s.group_id}-never-posted"]


async def test_a_client_that_knows_only_the_contract_knows_its_postings_are_scorable(
    summarizer_settings: Callable[..., SummarizerSettings], topics: CommonSettings
) -> None:
    """librdkafka publishes postings (murmur2 partitioner, as the contract asks) and reads the summaries topic
    from the beginning without a consumer group; every event validates against the committed schema and
    carries the content hash the client computes by the documented rule."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    s = summarizer_settings()
    rows = [
        {"schema": "job_posted.v1", "job_id": f"{s.group_id}-cf-{i}", "title": f"Nurse {i}", "company": "Acme",
         "location": "Berlin", "description": f"Care for patients on ward {i}. Night shifts."}
        for i in range(3)
    ]  # fmt: skip
    schema = json.loads((CONTRACT / "job_summarized.v1.json").read_text())
    validate = jsonschema.validators.validator_for(schema)(schema).validate
    seen: dict[str, dict[str, Any]] = {}

    def client_side() -> None:
        producer = Producer({"bootstrap.servers": s.kafka_bootstrap, "acks": "all", "partitioner": "murmur2_random"})
        for row in rows:
            producer.produce(s.topic_postings, value=json.dumps(row).encode(), key=row["job_id"].encode())
        assert producer.flush(WAIT_S) == 0
        consumer = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": "unused", "enable.auto.commit": False})
        try:
            parts = consumer.list_topics(s.topic_summaries, timeout=WAIT_S).topics[s.topic_summaries].partitions
            consumer.assign([TopicPartition(s.topic_summaries, p, OFFSET_BEGINNING) for p in parts])
            deadline = time.monotonic() + WAIT_S
            while len(seen) < len(rows) and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                event = json.loads(msg.value())
                validate(event)
                assert msg.key() == event["job_id"].encode()
                seen[event["job_id"]] = event
        finally:
            consumer.close()

    async with running(Summarizer(s)):
        await asyncio.to_thread(client_side)
    assert set(seen) == {r["job_id"] for r in rows}
    for row in rows:
        assert seen[row["job_id"]]["content_hash"] == documented_hash(row)
        assert seen[row["job_id"]]["schema"] == "job_summarized.v1"

"""Kafka clients built from settings: the one place topic names meet `schemas.topics` specs."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from jobscore.settings import CommonSettings
from schemas import DEAD_LETTERS, POSTINGS, RANKINGS, SCORE_REQUESTS, DeadLetter, TopicSpec

log = logging.getLogger(__name__)


def topic_name(settings: CommonSettings, spec: TopicSpec[Any]) -> str:
    return {
        POSTINGS.role: settings.topic_postings,
        SCORE_REQUESTS.role: settings.topic_requests,
        RANKINGS.role: settings.topic_results,
        DEAD_LETTERS.role: settings.topic_dead_letters,
    }[spec.role]


async def ensure_topics(settings: CommonSettings, names: Iterable[str] | None = None) -> None:
    """Create the deployment's missing topics from the topic plan (jobscore/topics.py: partitions,
    replicas, min.insync.replicas, retention, max.message.bytes). Idempotent; existing topics are left
    as they are, so real clusters may pre-provision (`jobscore topics --strimzi`) instead."""
    from jobscore.topics import PlannedTopic, TopicPlan, apply_plan, plan_topics

    plan = plan_topics(settings)
    if names is not None:
        wanted = list(names)
        extra = [
            PlannedTopic("other", n, settings.topic_partitions, settings.topic_replication_factor)
            for n in wanted
            if plan.by_name(n) is None
        ]
        plan = TopicPlan(plan.only(wanted).topics + tuple(extra))
    await apply_plan(settings, plan)


def make_producer(settings: CommonSettings, **overrides: Any) -> AIOKafkaProducer:
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": f"{settings.client_id}-producer",
        # acks=all: a ranking counts as published only once every in-sync replica has it, and only
        # then is the request's offset committed.
        "acks": "all",
        "enable_idempotence": settings.enable_idempotence,
        "linger_ms": 5,
        "max_request_size": 8 * 1024 * 1024,
        "compression_type": None,
    }
    kwargs.update(overrides)
    return AIOKafkaProducer(**kwargs)


def make_consumer(settings: CommonSettings, group_id: str, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": f"{settings.client_id}-consumer",
        "group_id": group_id,
        # Offsets are committed by the processing loop only after its outputs are durable.
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": 8 * 1024 * 1024,
        "fetch_max_bytes": 64 * 1024 * 1024,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": max(500, settings.session_timeout_ms // 5),
        "max_poll_interval_ms": 300_000,
    }
    kwargs.update(overrides)
    return AIOKafkaConsumer(*topics, **kwargs)


def dead_letter(record: ConsumerRecord, stage: str, reason: str, error_type: str) -> DeadLetter:
    return DeadLetter(
        stage=stage,  # type: ignore[arg-type]
        reason=reason[:2000],
        error_type=error_type,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        original=record.value or b"",
        failed_at=time.time(),
    )

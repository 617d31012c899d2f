"""Kafka clients built from settings: the one place topic names meet `schemas.topics` specs."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord

from jobscore.settings import CommonSettings
from schemas import DEAD_LETTERS, POSTINGS, RANKINGS, SCORE_REQUESTS, DeadLetter, TopicSpec

log = logging.getLogger(__name__)

TOPIC_EXISTS = 36


def topic_name(settings: CommonSettings, spec: TopicSpec[Any]) -> str:
    return {
        POSTINGS.role: settings.topic_postings,
        SCORE_REQUESTS.role: settings.topic_requests,
        RANKINGS.role: settings.topic_results,
        DEAD_LETTERS.role: settings.topic_dead_letters,
    }[spec.role]


async def ensure_topics(settings: CommonSettings, names: Iterable[str] | None = None) -> None:
    """Create the deployment's topics if missing (idempotent). Real clusters may pre-provision instead."""
    wanted = (
        list(names)
        if names is not None
        else [topic_name(settings, s) for s in (POSTINGS, SCORE_REQUESTS, RANKINGS, DEAD_LETTERS)]
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id=f"{settings.client_id}-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        if missing:
            resp = await admin.create_topics([NewTopic(n, settings.topic_partitions, 1) for n in missing])
            for name, code, *_ in resp.topic_errors:
                if code not in (0, TOPIC_EXISTS):
                    raise RuntimeError(f"could not create topic {name}: error code {code}")
            log.info("topics created", extra={"topics": missing, "partitions": settings.topic_partitions})
    finally:
        await admin.close()


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

"""Kafka access for the services, from their settings: client/kafka.py's factories (the one place transport
security is applied) with the services' timeouts and guarantees; dead letters; the broker-loss guard."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from client import kafka
from client.kafka import KafkaUnreachable, TopicReader
from jobscore.settings import CommonSettings
from schemas import DeadLetter, TopicSpec
from schemas.messages import (
    MAX_DEAD_LETTER_KEY_BYTES,
    MAX_DEAD_LETTER_ORIGINAL_BYTES,
    MAX_REASON_CHARS,
    DeadLetterKind,
    DeadLetterStage,
)

log = logging.getLogger(__name__)

__all__ = [
    "BrokerLost",
    "KafkaUnreachable",
    "TopicGuard",
    "TopicReader",
    "dead_letter",
    "make_admin",
    "make_consumer",
    "make_producer",
    "topic_name",
    "topic_reader",
    "unreachable_message",
]


def topic_name(settings: CommonSettings, spec: TopicSpec[Any]) -> str:
    """The name ``settings`` give the topic ``spec`` declares (client.config.TopicNames binds them)."""
    return settings.topic_names().of(spec)


def unreachable_message(settings: CommonSettings) -> str:
    """What to check when no broker answers: the usual cause is a transport-security mismatch."""
    return kafka.unreachable_message(settings.client_config())


def make_producer(settings: CommonSettings, **overrides: Any) -> AIOKafkaProducer:
    """The services' producer: client.kafka's (acks=all, record size limit, security) with idempotence as
    configured. A ranking counts as published only once every in-sync replica has it, and only then is the
    request's offset committed."""
    kwargs: dict[str, Any] = {"enable_idempotence": settings.enable_idempotence}
    kwargs.update(overrides)
    return kafka.make_producer(settings.client_config(), **kwargs)


def make_consumer(settings: CommonSettings, group_id: str, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    """The services' group consumer: client.kafka's (manual commits, record size limit, security) with the
    session, heartbeat, rebalance and poll timeouts from one place, checked against each other by the
    settings validator (a revoke's drain must fit the rebalance timeout)."""
    timeouts = settings.consumer_timeouts()
    kwargs: dict[str, Any] = {
        "session_timeout_ms": timeouts.session_ms,
        "heartbeat_interval_ms": timeouts.heartbeat_ms,
        "rebalance_timeout_ms": timeouts.rebalance_ms,
        "max_poll_interval_ms": timeouts.max_poll_ms,
    }
    kwargs.update(overrides)
    return kafka.make_consumer(settings.client_config(), group_id, *topics, **kwargs)


def make_admin(settings: CommonSettings, **overrides: Any) -> AIOKafkaAdminClient:
    """The admin client (topic plan, `jobscore topics`, status and ledger look-ups), security settings applied."""
    return kafka.make_admin(settings.client_config(), **overrides)


def topic_reader(settings: CommonSettings, purpose: str, *, with_admin: bool = True) -> kafka.TopicReader:
    """The bounded topic reader (client.kafka.TopicReader) for an operator tool or a service."""
    return kafka.TopicReader(settings.client_config(), purpose, with_admin=with_admin)


def dead_letter(
    record: ConsumerRecord,
    stage: DeadLetterStage,
    reason: str,
    error_type: DeadLetterKind,
    max_original_bytes: int = MAX_DEAD_LETTER_ORIGINAL_BYTES,
) -> DeadLetter:
    """The dead letter of ``record``; it fits the dead-letter topic whatever the record's size.

    The original value is kept up to ``max_original_bytes`` (the key up to MAX_DEAD_LETTER_KEY_BYTES), the
    rest is cut and recorded (``truncated``, ``original_size``, ``original_sha256`` of the whole value).
    ``dead_letter_id`` names the source record and stage, so a replay's copy can be deduplicated.
    """
    value = record.value or b""
    key = record.key
    limit = min(max_original_bytes, MAX_DEAD_LETTER_ORIGINAL_BYTES)
    cut = len(value) > limit or (key is not None and len(key) > MAX_DEAD_LETTER_KEY_BYTES)
    return DeadLetter(
        stage=stage,
        reason=reason[:MAX_REASON_CHARS],
        error_type=error_type,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=key[:MAX_DEAD_LETTER_KEY_BYTES] if key is not None else None,
        original=value[:limit],
        failed_at=time.time(),
        original_size=len(value),
        original_sha256=hashlib.sha256(value).hexdigest(),
        truncated=cut,
        dead_letter_id=f"{record.topic}:{record.partition}:{record.offset}:{stage}",
    )


# --- the broker still holds what it acknowledged (issue 18 finding 4) ----------------------------------


class BrokerView(NamedTuple):
    """What the worker's answers rely on: which cluster, and the partitions of the topics it writes."""

    cluster_id: str | None
    partitions: dict[str, int]  # topic -> partition count; a missing topic is absent


async def broker_view(client: Any, topics: Sequence[str]) -> BrokerView:
    """The cluster id and the partition counts of ``topics`` the broker has now (client/kafka.py
    `topic_metadata`: one Metadata request that never auto-creates a topic)."""
    meta = await kafka.topic_metadata(client, topics)
    return BrokerView(meta.cluster_id, {t: len(p) for t, p in meta.partitions.items()})


class BrokerLost(KafkaError):  # type: ignore[misc]  # KafkaError is Any: aiokafka ships no type information
    """The broker no longer holds topics our acknowledged writes went to (restarted empty, topic deleted,
    another cluster behind the address): nothing acknowledged since the last good check may be committed."""

    retriable = False


class TopicGuard:
    """Checks, before a commit, that the topics the committed records were answered on still exist with
    the partitions they had and that the cluster is the same one (a broker that restarted empty, as the
    embedded broker does, acknowledges writes to a topic it no longer has and drops them).

    ``check()`` asks the broker afresh (one Metadata request, never auto-creating a topic), so a commit
    that follows a passing check commits only records acknowledged before the check, by a broker that still
    had their topics afterwards.
    """

    def __init__(self, client: Any, topics: Iterable[str]) -> None:
        self.client = client  # an aiokafka AIOKafkaClient (producer.client / consumer._client)
        self.topics = sorted(set(topics))
        self.expected: BrokerView | None = None

    async def view(self) -> BrokerView:
        return await broker_view(self.client, self.topics)

    async def start(self) -> BrokerView:
        """Record the view to hold the broker to (after the topics were ensured)."""
        self.expected = await self.view()
        missing = [t for t in self.topics if t not in self.expected.partitions]
        if missing:
            raise BrokerLost(f"topics {missing} do not exist on the broker; create them (`jobscore topics`)")
        return self.expected

    async def check(self) -> None:
        """Raise `BrokerLost` when the broker lost a topic, its partitions or changed cluster id."""
        assert self.expected is not None, "start() first"
        now = await self.view()
        problems = []
        if self.expected.cluster_id and now.cluster_id != self.expected.cluster_id:
            problems.append(f"cluster id changed from {self.expected.cluster_id!r} to {now.cluster_id!r}")
        for topic, n in self.expected.partitions.items():
            got = now.partitions.get(topic)
            if got is None:
                problems.append(f"topic {topic} no longer exists")
            elif got < n:
                problems.append(f"topic {topic} has {got} partitions, had {n}")
        if problems:
            raise BrokerLost("; ".join(problems))

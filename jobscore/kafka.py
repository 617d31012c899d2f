"""Kafka clients built from settings: the one place topic names meet `schemas.topics` specs."""

from __future__ import annotations

import hashlib
import logging
import ssl
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import ConsumerRecord

from jobscore.settings import CommonSettings
from schemas import DEAD_LETTERS, POSTINGS, RANKINGS, SCORE_REQUESTS, SCORE_REQUESTS_BULK, DeadLetter, TopicSpec
from schemas.messages import MAX_DEAD_LETTER_KEY_BYTES, MAX_DEAD_LETTER_ORIGINAL_BYTES, MAX_REASON_CHARS
from schemas.topics import MAX_RECORD_BYTES

log = logging.getLogger(__name__)


class KafkaUnreachable(RuntimeError):
    """The brokers could not be reached with the configured transport security (see the message)."""


def client_security_kwargs(settings: CommonSettings) -> dict[str, Any]:
    """TLS and SASL keyword arguments for every aiokafka client (producer, consumer, admin, the client
    library): the one place the ``kafka_security_*``/``kafka_ssl_*``/``kafka_sasl_*`` settings meet
    aiokafka, so no client can be built without them."""
    proto = settings.kafka_security_protocol
    kwargs: dict[str, Any] = {"security_protocol": proto}
    if proto in ("SSL", "SASL_SSL"):
        ctx: ssl.SSLContext = create_ssl_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
            certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
            keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
            password=settings.kafka_ssl_key_password.get_secret_value() if settings.kafka_ssl_key_password else None,
        )
        # create_ssl_context starts from ssl.create_default_context (CERT_REQUIRED, system CAs, no
        # TLS < 1.2); only hostname checking is left to the deployment.
        ctx.check_hostname = settings.kafka_ssl_check_hostname
        kwargs["ssl_context"] = ctx
    if proto in ("SASL_PLAINTEXT", "SASL_SSL"):
        assert settings.kafka_sasl_password is not None  # the settings validator guarantees it
        kwargs |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            # aiokafka takes the SCRAM login through the same two "plain" arguments.
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password.get_secret_value(),
        }
    return kwargs


def unreachable_message(settings: CommonSettings) -> str:
    """What to check when no broker answers: the usual cause is a transport-security mismatch."""
    proto = settings.kafka_security_protocol
    return (
        f"could not connect to Kafka at {settings.kafka_bootstrap} with kafka_security_protocol={proto}. "
        "Check the address, then the listener's security: a TLS listener needs "
        "JOBSCORE_KAFKA_SECURITY_PROTOCOL=SSL (SASL_SSL with a login) and, for a private CA, "
        "JOBSCORE_KAFKA_SSL_CAFILE=/path/ca.pem (mutual TLS: JOBSCORE_KAFKA_SSL_CERTFILE and _KEYFILE); "
        "a SASL listener needs JOBSCORE_KAFKA_SASL_MECHANISM, JOBSCORE_KAFKA_SASL_USERNAME and "
        "JOBSCORE_KAFKA_SASL_PASSWORD. The client log lines above name the TLS or SASL error, if any."
    )


def topic_name(settings: CommonSettings, spec: TopicSpec[Any]) -> str:
    return {
        POSTINGS.role: settings.topic_postings,
        SCORE_REQUESTS.role: settings.topic_requests,
        SCORE_REQUESTS_BULK.role: settings.topic_requests_bulk,
        RANKINGS.role: settings.topic_results,
        DEAD_LETTERS.role: settings.topic_dead_letters,
    }[spec.role]


def make_producer(settings: CommonSettings, **overrides: Any) -> AIOKafkaProducer:
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": f"{settings.client_id}-producer",
        **client_security_kwargs(settings),
        # acks=all: a ranking counts as published only once every in-sync replica has it, and only
        # then is the request's offset committed.
        "acks": "all",
        "enable_idempotence": settings.enable_idempotence,
        "linger_ms": 5,
        # One limit for every record we produce or fetch (schemas/topics.py): each topic's values fit it.
        "max_request_size": MAX_RECORD_BYTES,
        "compression_type": None,
    }
    kwargs.update(overrides)
    return AIOKafkaProducer(**kwargs)


def make_consumer(settings: CommonSettings, group_id: str, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    timeouts = settings.consumer_timeouts()
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": f"{settings.client_id}-consumer",
        **client_security_kwargs(settings),
        "group_id": group_id,
        # Offsets are committed by the processing loop only after its outputs are durable.
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        # Records up to MAX_RECORD_BYTES are fetched, so one over its topic's limit reaches the decoder and
        # is dead-lettered as "oversized" (its dead letter is cut to fit) instead of stalling the partition.
        "max_partition_fetch_bytes": MAX_RECORD_BYTES,
        "fetch_max_bytes": 64 * 1024 * 1024,
        # Session, heartbeat, rebalance and poll timeouts come from one place, checked against each other
        # by the settings validator (a revoke's drain must fit the rebalance timeout).
        "session_timeout_ms": timeouts.session_ms,
        "heartbeat_interval_ms": timeouts.heartbeat_ms,
        "rebalance_timeout_ms": timeouts.rebalance_ms,
        "max_poll_interval_ms": timeouts.max_poll_ms,
    }
    kwargs.update(overrides)
    return AIOKafkaConsumer(*topics, **kwargs)


def make_admin(settings: CommonSettings, **overrides: Any) -> Any:
    """The admin client (topic plan, `jobscore topics`, status and ledger look-ups), security settings applied."""
    from aiokafka.admin import AIOKafkaAdminClient

    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": f"{settings.client_id}-admin",
        **client_security_kwargs(settings),
    }
    kwargs.update(overrides)
    return AIOKafkaAdminClient(**kwargs)


def dead_letter(
    record: ConsumerRecord,
    stage: str,
    reason: str,
    error_type: str,
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
        stage=stage,  # type: ignore[arg-type]
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


class BrokerLost(KafkaError):
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
        from aiokafka.protocol.metadata import MetadataRequest

        node = self.client.get_random_node()
        if node is None:
            raise KafkaConnectionError("no broker known to ask for metadata")
        resp = await self.client.send(node, MetadataRequest(self.topics, allow_auto_topic_creation=False))
        parts = {t[1]: len(t[-1]) for t in resp.topics if t[0] == 0 and t[-1]}
        return BrokerView(getattr(resp, "cluster_id", None), parts)

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

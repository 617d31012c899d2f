"""Kafka clients built from settings: the one place topic names meet `schemas.topics` specs."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import ConsumerRecord

from jobscore.settings import CommonSettings
from schemas import DEAD_LETTERS, POSTINGS, RANKINGS, SCORE_REQUESTS, DeadLetter, TopicSpec

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


# The name jobscore/topics.py looks up for its admin client.
security_kwargs = client_security_kwargs


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
    try:
        await apply_plan(settings, plan)
    except KafkaConnectionError as e:
        # Services call this first, so a security mismatch is reported here, once, with what to set.
        raise KafkaUnreachable(unreachable_message(settings)) from e


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
        "max_request_size": 8 * 1024 * 1024,
        "compression_type": None,
    }
    kwargs.update(overrides)
    return AIOKafkaProducer(**kwargs)


def make_consumer(settings: CommonSettings, group_id: str, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": f"{settings.client_id}-consumer",
        **client_security_kwargs(settings),
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

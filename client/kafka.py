"""The one Kafka access point: producer, consumer and admin factories (transport security applied once,
here) and `TopicReader`, the one bounded reader of topics.

The services build on these (jobscore/kafka.py adds their timeouts and producer guarantees); the
operator tools (status, ledger, dead letters) and this package's waiters read topics through
`TopicReader`.

A partition's true end is *read*, not only asked for: tansu (the embedded dev broker) answers
ListOffsets(latest) with the base offset of the last produced batch + 1, too low after batched produces,
while the high watermark it puts in fetch responses is right. So every end here is max(ListOffsets, the
highwater of a fetch from there); on real Kafka the two agree and the fetch costs one round trip.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Callable, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import ConsumerRecord

from client.config import ClientConfig, ConfigSource, as_config
from schemas.topics import MAX_RECORD_BYTES

FETCH_MAX_WAIT_MS = 20  # how long the broker may hold a fetch with nothing to return (bounded reads)
FETCH_WAIT_MS = 300  # one fetch round: how long a read waits for records that are known to exist
READ_DEADLINE_S = 30.0  # a whole read of a topic range gives up (and says so) after this
TOPIC_LOOKUP_S = 3.0  # how long a missing topic is looked for before it counts as absent


class KafkaUnreachable(RuntimeError):
    """The brokers could not be reached with the configured transport security (see the message)."""


def security_kwargs(config: ClientConfig) -> dict[str, Any]:
    """TLS and SASL keyword arguments for every aiokafka client: the one place the security settings meet
    aiokafka, so no client can be built without them."""
    proto = config.security_protocol
    kwargs: dict[str, Any] = {"security_protocol": proto}
    if proto in ("SSL", "SASL_SSL"):
        ctx: ssl.SSLContext = create_ssl_context(
            cafile=config.ssl_cafile,
            certfile=config.ssl_certfile,
            keyfile=config.ssl_keyfile,
            password=config.ssl_key_password,
        )
        # create_ssl_context starts from ssl.create_default_context (CERT_REQUIRED, system CAs, no
        # TLS < 1.2); only hostname checking is left to the deployment.
        ctx.check_hostname = config.ssl_check_hostname
        kwargs["ssl_context"] = ctx
    if proto in ("SASL_PLAINTEXT", "SASL_SSL"):
        # aiokafka takes the SCRAM login through the same two "plain" arguments.
        kwargs["sasl_mechanism"] = config.sasl_mechanism
        kwargs["sasl_plain_username"] = config.sasl_username
        kwargs["sasl_plain_password"] = config.sasl_password
    return kwargs


def unreachable_message(config: ClientConfig) -> str:
    """What to check when no broker answers: the usual cause is a transport-security mismatch."""
    proto = config.security_protocol
    return (
        f"could not connect to Kafka at {config.bootstrap} with kafka_security_protocol={proto}. "
        "Check the address, then the listener's security: a TLS listener needs "
        "JOBSCORE_KAFKA_SECURITY_PROTOCOL=SSL (SASL_SSL with a login) and, for a private CA, "
        "JOBSCORE_KAFKA_SSL_CAFILE=/path/ca.pem (mutual TLS: JOBSCORE_KAFKA_SSL_CERTFILE and _KEYFILE); "
        "a SASL listener needs JOBSCORE_KAFKA_SASL_MECHANISM, JOBSCORE_KAFKA_SASL_USERNAME and "
        "JOBSCORE_KAFKA_SASL_PASSWORD. The client log lines above name the TLS or SASL error, if any."
    )


def make_producer(config: ClientConfig, **overrides: Any) -> AIOKafkaProducer:
    kwargs: dict[str, Any] = {
        "bootstrap_servers": config.bootstrap,
        "client_id": f"{config.client_id}-producer",
        **security_kwargs(config),
        # acks=all: a record counts as published only once every in-sync replica has it.
        "acks": "all",
        "linger_ms": 5,
        # One limit for every record we produce or fetch (schemas/topics.py): each topic's values fit it.
        "max_request_size": MAX_RECORD_BYTES,
        "compression_type": None,
    }
    kwargs.update(overrides)
    return AIOKafkaProducer(**kwargs)


def make_consumer(config: ClientConfig, group_id: str | None, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer; ``group_id=None`` for one that observes (manual assignment, commits nothing)."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": config.bootstrap,
        "client_id": f"{config.client_id}-consumer",
        **security_kwargs(config),
        "group_id": group_id,
        # Offsets are committed by whoever processes the records, only once their outputs are durable.
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        # Records up to MAX_RECORD_BYTES are fetched, so one over its topic's limit reaches the decoder and
        # is dead-lettered as "oversized" instead of stalling the partition.
        "max_partition_fetch_bytes": MAX_RECORD_BYTES,
        "fetch_max_bytes": 64 * 1024 * 1024,
    }
    kwargs.update(overrides)
    return AIOKafkaConsumer(*topics, **kwargs)


def make_admin(config: ClientConfig, **overrides: Any) -> AIOKafkaAdminClient:
    kwargs: dict[str, Any] = {
        "bootstrap_servers": config.bootstrap,
        "client_id": f"{config.client_id}-admin",
        **security_kwargs(config),
    }
    kwargs.update(overrides)
    return AIOKafkaAdminClient(**kwargs)


Bounds = dict[TopicPartition, tuple[int, int]]


class TopicMetadata(NamedTuple):
    cluster_id: str | None
    partitions: dict[str, list[int]]  # topic -> its partition ids; a topic the broker does not have is absent


async def topic_metadata(client: Any, topics: Sequence[str]) -> TopicMetadata:
    """The partitions of ``topics`` the broker has now: one Metadata request that never creates a topic (the
    admin client's ``describe_topics`` asks with auto-creation allowed, so a look-up made the topic on brokers
    that auto-create). ``client``: an aiokafka ``AIOKafkaClient`` (``producer.client``, an admin's client)."""
    from aiokafka.errors import KafkaConnectionError
    from aiokafka.protocol import metadata

    node = client.get_random_node()
    if node is None:
        raise KafkaConnectionError("no broker known to ask for metadata")
    if isinstance(metadata.MetadataRequest, list):
        # aiokafka < 0.13 (what Python 3.9 gets): one class per version; v4 is the first that can refuse to create.
        request = metadata.MetadataRequest[4](list(topics), False)
    else:
        request = metadata.MetadataRequest(list(topics), allow_auto_topic_creation=False)
    resp = await client.send(node, request)
    parts = {t[1]: sorted(p[1] for p in t[-1]) for t in resp.topics if t[0] == 0 and t[-1]}
    return TopicMetadata(getattr(resp, "cluster_id", None), parts)


class TopicReader:
    """A group-less consumer that finds partitions and their true ends and reads within bounds, and an
    admin client for topic metadata and group offsets. Reading commits nothing and disturbs no group.

    Use as an async context: ``async with TopicReader(config, "ledger") as r: ...``.
    """

    def __init__(self, source: ConfigSource, purpose: str = "reader", *, with_admin: bool = True) -> None:
        config = as_config(source)
        # A short broker-side fetch wait: an empty partition's end (its highwater) comes with a fetch
        # response that holds no records, which the broker would otherwise hold back fetch_max_wait_ms
        # (500 ms by default) — once per partition read.
        self.consumer = make_consumer(
            config, None, client_id=f"{config.client_id}-{purpose}", fetch_max_wait_ms=FETCH_MAX_WAIT_MS
        )
        self.admin: AIOKafkaAdminClient | None = make_admin(config) if with_admin else None

    async def __aenter__(self) -> TopicReader:
        try:
            await self.consumer.start()
            if self.admin is not None:
                await self.admin.start()
        except BaseException:
            await self.__aexit__()  # a failed start leaves open connections behind otherwise
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        if self.admin is not None:
            await self.admin.close()

    async def partitions(self, topic: str, wait_s: float = TOPIC_LOOKUP_S) -> list[TopicPartition]:
        """The topic's partitions, looked for up to ``wait_s`` (a new topic's metadata takes a moment to
        reach every broker); `LookupError` if it has none by then."""
        deadline = time.monotonic() + wait_s
        while True:
            if self.admin is not None:
                # Asked through the admin's connection (a consumer with a manual assignment only refreshes the
                # metadata of the topics it is assigned), never creating the topic by looking it up.
                parts = set((await topic_metadata(self.admin._client, [topic])).partitions.get(topic, []))
            else:
                await self.consumer.topics()  # refreshes cluster metadata
                parts = set(self.consumer.partitions_for_topic(topic) or ())
            if parts:
                return [TopicPartition(topic, p) for p in sorted(parts)]
            if time.monotonic() > deadline:
                raise LookupError(f"topic {topic} does not exist (check the topic_* settings or run `jobscore topics`)")
            await asyncio.sleep(0.2)  # back off between metadata refreshes while the topic is being created

    async def bounds(self, tps: Sequence[TopicPartition]) -> Bounds:
        """(log start, true end) per partition."""
        if not tps:
            return {}
        begin = await self.consumer.beginning_offsets(list(tps))
        listed = await self.consumer.end_offsets(list(tps))
        self.consumer.assign(list(tps))
        for tp in tps:
            self.consumer.seek(tp, listed[tp])
        deadline = time.monotonic() + READ_DEADLINE_S
        while any(self.consumer.highwater(tp) is None for tp in tps) and time.monotonic() < deadline:
            # Short rounds: an empty partition's highwater arrives with a response that holds no records, and
            # getmany would sit out its whole timeout waiting for some.
            await self.consumer.getmany(*tps, timeout_ms=2 * FETCH_MAX_WAIT_MS)
        return {tp: (begin[tp], max(listed[tp], self.consumer.highwater(tp) or 0)) for tp in tps}

    async def read(self, ranges: Bounds) -> AsyncIterator[ConsumerRecord]:
        """Records with start <= offset < end per partition (offsets may have gaps: compaction)."""
        todo = {tp: r for tp, r in ranges.items() if r[0] < r[1]}
        if not todo:
            return
        self.consumer.assign(list(todo))
        for tp, (start, _) in todo.items():
            self.consumer.seek(tp, start)
        deadline = time.monotonic() + READ_DEADLINE_S
        while todo and time.monotonic() < deadline:
            batch = await self.consumer.getmany(*todo, timeout_ms=FETCH_WAIT_MS)
            for tp, recs in batch.items():
                end = todo.get(tp, (0, 0))[1]
                for rec in recs:
                    if rec.offset < end:
                        yield rec
            for tp in list(todo):
                if await self.consumer.position(tp) >= todo[tp][1]:
                    del todo[tp]
        if todo:
            raise TimeoutError(f"could not read {sorted(map(str, todo))} to their end in {READ_DEADLINE_S:.0f}s")

    async def read_topic(self, topic: str) -> AsyncIterator[ConsumerRecord]:
        """Every record of ``topic`` from each partition's log start to its true end now."""
        tps = await self.partitions(topic)
        async for rec in self.read(await self.bounds(tps)):
            yield rec

    async def read_until_idle(
        self,
        topic: str,
        on_record: Callable[[ConsumerRecord], None],
        idle_s: float = 1.0,
        timeout_s: float = 300.0,
    ) -> tuple[int, int, bool]:
        """Feed every record of ``topic`` to ``on_record``, from the beginning to each partition's end, then on
        until each partition has been idle for ``idle_s`` (records produced meanwhile). Returns (partitions,
        records, complete): after ``timeout_s`` it gives up with ``complete=False``; a topic that does not
        exist is (0, 0, True) — nothing was ever written to it.

        A partition counts as read only once a fetch response has given its watermark and the position has
        reached it: a reader that trusted ListOffsets and then waited only ``idle_s`` for the rest reported a
        ranking the broker held as missing (a clean-clone CI run, 2026-11-26)."""
        try:
            tps = await self.partitions(topic)
        except LookupError:
            return 0, 0, True
        n = 0
        consumer = self.consumer
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)  # a floor: raised to each fetch's watermark below
        at_end: dict[TopicPartition, float] = {}  # partition → when it last reached its end or got a record
        deadline = time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            if len(at_end) == len(tps) and all(now - t >= idle_s for t in at_end.values()):
                return len(tps), n, True
            if now > deadline:
                return len(tps), n, False
            batch = await consumer.getmany(timeout_ms=int(max(0.05, min(idle_s, 0.5)) * 1000))
            now = time.monotonic()
            for records in batch.values():
                for rec in records:
                    on_record(rec)
                    n += 1
            for tp in tps:
                hw = consumer.highwater(tp)
                if hw is None:
                    continue  # no fetch response for this partition yet: its end is not known
                ends[tp] = max(ends[tp], hw)
                if await consumer.position(tp) < ends[tp]:
                    at_end.pop(tp, None)
                elif tp in batch or tp not in at_end:
                    at_end[tp] = now

    async def follow(self, topics: Iterable[str], from_beginning: bool = False, wait_s: float = 30.0) -> None:
        """Assign every partition of ``topics`` and position at their start, or at their end with the
        positions resolved now (so nothing published after this call is missed); then read with
        ``consumer.getmany``. Waits up to ``wait_s`` for a topic that is being created."""
        tps = [tp for t in topics for tp in await self.partitions(t, wait_s=wait_s)]
        self.consumer.assign(tps)
        if from_beginning:
            await self.consumer.seek_to_beginning(*tps)
        else:
            await self.consumer.seek_to_end(*tps)
            for tp in tps:
                await self.consumer.position(tp)

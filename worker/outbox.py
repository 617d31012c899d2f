"""The worker's outbox: a request record's answers (its ranking, or a dead letter) sent and acknowledged.

Every send is acknowledged (acks=all) and tried ``kafka_send_attempts`` times with backoff (logged once
per outage); what fails every try is raised, named `BrokerLost` when the broker lost our topics — the worker
then stops without committing.

A request's ``reply_topic`` must exist (docs/publishing.md "Reply topics"): the outbox asks the broker (one
Metadata request, never auto-creating, remembered for ``REPLY_TOPIC_CHECK_S``) and, when it does not exist,
publishes the answer on the rankings topic at once — counted in ``jobscore_worker_reply_topic_fallback_total
{reason="missing"}`` and logged once per topic per ``REPLY_TOPIC_CHECK_S`` — instead of retrying a write
that cannot succeed (the broker's health is not in question). A reply topic that exists but cannot be
written after every try falls back the same way (``reason="send_failed"``), so one record never fails forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import NamedTuple

from aiokafka.errors import KafkaError

from jobscore import metrics
from jobscore.kafka import BrokerLost, broker_view
from jobscore.retry import Backoff, Outage, retry
from jobscore.service import Shell
from jobscore.settings import WorkerSettings
from schemas import RANKINGS, Ranking
from schemas.headers import message_headers

log = logging.getLogger(__name__)

# The broker as the worker's sends see it: logs once per outage, drives HEALTH "broker", counts errors.
BROKER_OUTAGE = Outage("broker", metrics.KAFKA_ERRORS)
# How long a reply topic's existence (or absence) is taken as known, and a missing one's warning repeated.
REPLY_TOPIC_CHECK_S = 60.0


class Outgoing(NamedTuple):
    """One message that answers a request record (a ranking, a dead letter)."""

    topic: str
    value: bytes
    key: bytes | None
    # Kafka headers (schemas/headers.py): content type, schema tag, the request's trace context.
    headers: Sequence[tuple[str, bytes]] = ()


def answer_record(topic: str, ranking: Ranking, trace: Sequence[tuple[str, bytes]]) -> Outgoing:
    """The ranking record answering a request: keyed by request id, with the request's trace context."""
    tag = type(ranking).__struct_config__.tag
    return Outgoing(topic, RANKINGS.encode(ranking), ranking.request_id.encode(), message_headers(str(tag), trace))


class Outbox:
    """Sends answers through the service shell's producer (module docstring)."""

    def __init__(self, settings: WorkerSettings, shell: Shell, rankings_topic: str, dead_letters_topic: str) -> None:
        self.settings = settings
        self.shell = shell
        self.rankings_topic = rankings_topic
        self.dead_letters_topic = dead_letters_topic
        self._reply_topics: dict[str, tuple[bool, float]] = {}  # reply topic → (exists, checked at, monotonic)

    async def send_all(self, outbox: Sequence[Outgoing]) -> None:
        """Send everything and wait for every acknowledgement (a failed delivery raises here)."""
        outbox = [await self._routed(out) for out in outbox]
        results = await asyncio.gather(*(self.send(*out) for out in outbox), return_exceptions=True)
        retry_on_rankings = []
        for out, res in zip(outbox, results, strict=True):
            if not isinstance(res, BaseException):
                continue
            # A reply topic that exists but cannot be written: answer on the rankings topic instead of failing
            # this record forever (a crash loop). Anything else is a broker problem: raise.
            if self._is_reply(out.topic) and isinstance(res, KafkaError):
                metrics.REPLY_FALLBACK.labels("send_failed").inc()
                log.warning(
                    "reply topic could not be written; answering on the rankings topic",
                    extra={"reply_topic": out.topic, "error": repr(res)},
                )
                retry_on_rankings.append(out._replace(topic=self.rankings_topic))
            else:
                raise res
        if retry_on_rankings:
            await asyncio.gather(*(self.send(*out) for out in retry_on_rankings))

    def _is_reply(self, topic: str) -> bool:
        return topic not in (self.rankings_topic, self.dead_letters_topic)

    async def _routed(self, out: Outgoing) -> Outgoing:
        """``out`` itself, or on the rankings topic when it names a reply topic the broker does not have."""
        if not self._is_reply(out.topic) or await self._reply_topic_exists(out.topic):
            return out
        metrics.REPLY_FALLBACK.labels("missing").inc()
        return out._replace(topic=self.rankings_topic)

    async def _reply_topic_exists(self, topic: str) -> bool:
        now = time.monotonic()
        known = self._reply_topics.get(topic)
        if known is not None and now - known[1] < REPLY_TOPIC_CHECK_S:
            return known[0]
        producer = self.shell.producer
        assert producer is not None, "the shell is not started"
        try:
            exists = topic in (await broker_view(producer.client, [topic])).partitions
        except KafkaError:
            return True  # the broker did not answer: let the send's own retries and fallback decide
        if len(self._reply_topics) > 10_000:  # bounded: clients choose these names
            self._reply_topics.clear()
        self._reply_topics[topic] = (exists, now)
        if not exists:
            log.warning(
                "reply topic does not exist; answering on the rankings topic (create reply topics before "
                "naming them: `jobscore topics --reply-topic NAME`)",
                extra={"reply_topic": topic, "rankings_topic": self.rankings_topic},
            )
        return exists

    async def send(
        self, topic: str, value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """One acknowledged send, tried ``kafka_send_attempts`` times with backoff (logged once per outage)."""
        producer = self.shell.producer
        assert producer is not None, "the shell is not started"

        async def send() -> None:
            await (await producer.send(topic, value, key=key, headers=list(headers) or None))

        s = self.settings
        await retry(
            send,
            op="produce",
            retry_on=(KafkaError,),
            attempts=s.kafka_send_attempts,
            backoff=Backoff(max_s=s.kafka_send_retry_max_s),
            outage=BROKER_OUTAGE,
        )

    async def explain(self, e: BaseException) -> BaseException:
        """A send that failed every try: `BrokerLost` when the broker lost our topics, else the error."""
        if isinstance(e, KafkaError) and self.shell.guard is not None:
            try:
                await self.shell.guard.check()
            except BrokerLost as lost:
                return lost
            except KafkaError:
                pass
        return e

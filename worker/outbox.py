"""The worker's outbox: a request record's answers (its ranking, or a dead letter) sent and acknowledged.

Every send is acknowledged (acks=all) and tried ``kafka_send_attempts`` times with backoff (logged once
per outage). A reply topic a client named that cannot be written gets the answer on the rankings topic
instead of failing the record forever (a crash loop); anything else that fails every try is raised, named
`BrokerLost` when the broker lost our topics — the worker then stops without committing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import NamedTuple

from aiokafka.errors import KafkaError

from jobscore import metrics
from jobscore.kafka import BrokerLost
from jobscore.retry import Backoff, Outage, retry
from jobscore.service import Shell
from jobscore.settings import WorkerSettings
from schemas import RANKINGS, Ranking
from schemas.headers import message_headers

log = logging.getLogger(__name__)

# The broker as the worker's sends see it: logs once per outage, drives HEALTH "broker", counts errors.
BROKER_OUTAGE = Outage("broker", metrics.KAFKA_ERRORS)


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

    async def send_all(self, outbox: Sequence[Outgoing]) -> None:
        """Send everything and wait for every acknowledgement (a failed delivery raises here)."""
        results = await asyncio.gather(*(self.send(*out) for out in outbox), return_exceptions=True)
        retry_on_rankings = []
        for out, res in zip(outbox, results, strict=True):
            topic = out.topic
            if not isinstance(res, BaseException):
                continue
            # A reply topic the client named may not exist; answer on the rankings topic instead of failing
            # this record forever (a crash loop). Anything else is a broker problem: raise.
            if topic not in (self.rankings_topic, self.dead_letters_topic) and isinstance(res, KafkaError):
                log.warning(
                    "reply topic failed; answering on the rankings topic",
                    extra={"reply_topic": topic, "error": repr(res)},
                )
                retry_on_rankings.append(out._replace(topic=self.rankings_topic))
            else:
                raise res
        if retry_on_rankings:
            await asyncio.gather(*(self.send(*out) for out in retry_on_rankings))

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

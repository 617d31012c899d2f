"""Reading answers: `ResultsReader`, the one waiter for rankings.

One consumer without a group (it observes the rankings and dead-letter topics from their end; it takes no
part in delivery) routes each ranking to the request that waits for it. The reader

- never dies on a record it cannot decode (a future ``ranking.v2``, garbage): it counts and skips it;
- keeps memory bounded: it tracks only ids registered with `track` and not yet collected, each for at most
  ``ttl_s``; rankings for other ids, and duplicates of delivered ones, are counted and dropped;
- lets a timed-out wait be retried on the same id (a ranking that arrives between the two waits is kept
  for the retry, until its TTL);
- turns a dead letter naming a pending request id into `DeadLettered` with the reason.

`RankingWaiter` is the same reader in *observe* mode, for short-lived tools (the demo, `jobscore request`,
benches, tests): it keeps every ranking it sees (bounded), answers ``wait(id)`` with the `Ranking` whatever
its status, and ignores dead letters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Union

import msgspec
from aiokafka.errors import KafkaError

from client.config import ConfigSource, as_config
from client.errors import DeadLettered, DeadlineExceeded, RequestRejected, ScoreTimeout, ScoringError
from client.kafka import TopicReader
from schemas import RANKINGS, DeadLetter, Ranking, SchemaError
from schemas.deadletters import read_dead_letter

log = logging.getLogger(__name__)

Outcome = Union[Ranking, ScoringError]


class _IdOnly(msgspec.Struct):
    """The request id inside a dead letter's original bytes, if they are a JSON object that has one."""

    request_id: Any = None


_ID_ONLY = msgspec.json.Decoder(_IdOnly)


@dataclass
class ReaderStats:
    """What the results reader saw besides the rankings it delivered."""

    delivered: int = 0
    undecodable: int = 0  # records of the rankings topic it could not decode (e.g. a newer schema version)
    unknown: int = 0  # rankings for ids this client does not track (others' requests, or already expired)
    duplicates: int = 0  # second copies of delivered rankings (at-least-once redelivery)
    expired: int = 0  # tracked ids dropped after ttl_s without anyone collecting them
    dead_letters: int = 0  # dead letters that named a tracked request
    fetch_errors: int = 0


@dataclass(eq=False)
class _Tracked:
    expires_at: float
    outcome: Outcome | None = None
    future: asyncio.Future[None] | None = None  # set once ``outcome`` is known


class ResultsReader:
    """One consumer (no group) on a rankings topic and the dead-letter topic, shared by every wait.

    Only ids registered with `track` are kept, each until it is collected or ``ttl_s`` passes; at most
    ``max_tracked`` at once (the oldest is dropped first). Everything else is counted and dropped.
    """

    observe_all = False  # RankingWaiter: keep every ranking seen, not only tracked ones

    def __init__(
        self, config: ConfigSource, topic: str | None = None, *, ttl_s: float = 600.0, max_tracked: int = 100_000
    ) -> None:
        config = as_config(config)
        self.config = config
        self.topic = topic or config.topics.rankings
        self.dlq_topic = config.topics.dead_letters
        self.ttl_s = ttl_s
        self.max_tracked = max_tracked
        self.stats = ReaderStats()
        self._tracked: OrderedDict[str, _Tracked] = OrderedDict()
        self._done: OrderedDict[str, float] = OrderedDict()  # delivered ids → expiry (to count duplicates)
        self._reader = TopicReader(config, "results")
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._tracked)

    async def start(self, from_beginning: bool = False) -> None:
        await self._reader.__aenter__()
        try:
            topics = [self.topic] if self.observe_all else [self.topic, self.dlq_topic]
            # From their current end, positions resolved now: nothing published after this is missed.
            await self._reader.follow(topics, from_beginning=from_beginning)
        except BaseException:
            await self._reader.__aexit__()
            raise
        self._task = asyncio.ensure_future(self._pump())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._reader.__aexit__()
        for t in self._tracked.values():
            if t.future is not None and not t.future.done():
                t.future.cancel()

    def track(self, request_id: str) -> None:
        """Expect an answer for ``request_id`` (call before publishing it)."""
        self._expire(time.monotonic())
        self._tracked[request_id] = _Tracked(time.monotonic() + self.ttl_s)
        self._tracked.move_to_end(request_id)
        self._done.pop(request_id, None)
        self._bound()

    def forget(self, request_id: str) -> None:
        t = self._tracked.pop(request_id, None)
        if t is not None and t.future is not None and not t.future.done():
            t.future.cancel()

    async def wait(self, request_id: str, timeout: float) -> Ranking:
        """The ranking of a tracked id; raises a `ScoringError`. After `ScoreTimeout` the id stays tracked
        (until its TTL) and may be waited for again."""
        t = self._tracked.get(request_id)
        if t is None:
            raise ScoringError(
                request_id,
                f"request {request_id} is not tracked (never sent by this client, "
                "already collected, or older than result_ttl_s)",
            )
        if not await self._settled(t, timeout):
            raise ScoreTimeout(request_id, f"no ranking for {request_id} within {timeout:g}s; wait again with result()")
        self._tracked.pop(request_id, None)
        self._done[request_id] = time.monotonic() + self.ttl_s
        outcome = t.outcome
        assert outcome is not None
        if isinstance(outcome, ScoringError):
            raise outcome
        return outcome

    @staticmethod
    async def _settled(t: _Tracked, timeout: float) -> bool:
        """Wait up to ``timeout`` for ``t``'s outcome; False if it has none yet (it stays waitable)."""
        if t.outcome is None:
            if t.future is None or t.future.done():
                t.future = asyncio.get_running_loop().create_future()
            # shield: timing out must not cancel the shared future a retry will wait on.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(t.future), timeout)
        return t.outcome is not None

    def _bound(self) -> None:
        while len(self._tracked) > self.max_tracked:
            rid, t = self._tracked.popitem(last=False)
            self._drop(rid, t)

    def _resolve(self, request_id: str, outcome: Outcome) -> None:
        t = self._tracked[request_id]
        if t.outcome is not None:
            # A request over max_candidates gets a dead letter and a "rejected" ranking, in either order:
            # the ranking is the answer, when it comes before the outcome is collected.
            if isinstance(t.outcome, DeadLettered) and isinstance(outcome, RequestRejected):
                t.outcome = outcome
            else:
                self.stats.duplicates += 1
            return
        t.outcome = outcome
        self.stats.delivered += 1
        if t.future is not None and not t.future.done():
            t.future.set_result(None)

    def _drop(self, request_id: str, t: _Tracked) -> None:
        self.stats.expired += 1
        if t.future is not None and not t.future.done():
            t.outcome = ScoreTimeout(request_id, f"{request_id} dropped from tracking (TTL or max_tracked)")
            t.future.set_result(None)

    def _expire(self, now: float) -> None:
        while self._tracked:
            rid, t = next(iter(self._tracked.items()))
            if t.expires_at > now or (t.future is not None and not t.future.done()):
                break
            del self._tracked[rid]
            self._drop(rid, t)
        while self._done and next(iter(self._done.values())) <= now:
            self._done.popitem(last=False)

    async def _pump(self) -> None:
        consumer = self._reader.consumer
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=500)
            except KafkaError as e:
                # The client reconnects by itself; keep reading (waits time out meanwhile, typed).
                self.stats.fetch_errors += 1
                log.warning("results reader: fetch failed; retrying", extra={"error": repr(e)})
                await asyncio.sleep(1.0)  # back off before the next fetch while the broker is away
                continue
            self._expire(time.monotonic())
            for tp, records in batch.items():
                for rec in records:
                    try:
                        if tp.topic == self.dlq_topic and not self.observe_all:
                            self._on_dead_letter(rec.key, rec.value, rec.headers)
                        else:
                            self._on_ranking(rec.value)
                    except Exception as e:  # one bad record never ends the reader
                        self.stats.undecodable += 1
                        log.debug("results reader: record skipped", extra={"error": repr(e), "offset": rec.offset})

    def _on_ranking(self, value: bytes | None) -> None:
        try:
            r = RANKINGS.decode(value)
        except SchemaError as e:
            # A record we cannot read (a newer ranking version, garbage) must not end the reader.
            self.stats.undecodable += 1
            log.debug("undecodable ranking skipped", extra={"reason": e.reason})
            return
        if r.request_id not in self._tracked and self.observe_all and r.request_id not in self._done:
            self._tracked[r.request_id] = _Tracked(time.monotonic() + self.ttl_s)
            self._bound()
        if r.request_id in self._tracked:
            self._resolve(r.request_id, self._outcome_of(r))
        elif r.request_id in self._done:
            self.stats.duplicates += 1
        else:
            self.stats.unknown += 1

    def _outcome_of(self, r: Ranking) -> Outcome:
        if r.status == "rejected":
            return RequestRejected(r.request_id, f"rejected: {r.detail}")
        if r.status == "timeout":
            return DeadlineExceeded(r.request_id, f"deadline passed: {r.detail}")
        return r

    def _on_dead_letter(
        self, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None
    ) -> None:
        if not self._tracked:
            return
        try:
            dl: DeadLetter = read_dead_letter(key, value, headers)
        except SchemaError:
            return  # dead letters of other versions are not ours to judge
        if dl.stage != "worker":
            return
        candidates = []
        if key:
            candidates.append(key.decode("utf-8", "replace"))
        with contextlib.suppress(Exception):
            rid = _ID_ONLY.decode(dl.original).request_id
            if isinstance(rid, str):
                candidates.append(rid)
        for rid in candidates:
            t = self._tracked.get(rid)
            if t is not None and t.outcome is None:
                self.stats.dead_letters += 1
                self._resolve(rid, DeadLettered(rid, dl.reason, dl.error_type))
                return


class RankingWaiter(ResultsReader):
    """Observe every ranking on a topic (short-lived tools, the demo, benches, tests): ``rankings`` holds each
    request id's first ranking (at most ``max_kept``), ``wait(id)`` returns it whatever its status, and
    second copies count in ``duplicates``. Use as an async context."""

    observe_all = True

    def __init__(
        self,
        config: ConfigSource,
        topic: str | None = None,
        *,
        max_kept: int = 1_000_000,
        on_ranking: Callable[[Ranking], None] | None = None,
    ) -> None:
        super().__init__(as_config(config), topic, ttl_s=float("inf"), max_tracked=max_kept)
        self.rankings: dict[str, Ranking] = {}
        self._on_first = on_ranking  # called with each request id's first ranking as it arrives

    @property
    def duplicates(self) -> int:
        return self.stats.duplicates

    @property
    def undecodable(self) -> int:
        return self.stats.undecodable

    async def __aenter__(self) -> RankingWaiter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _outcome_of(self, r: Ranking) -> Outcome:
        self.rankings[r.request_id] = r
        if self._on_first is not None:
            self._on_first(r)
        return r

    def _drop(self, request_id: str, t: _Tracked) -> None:
        self.rankings.pop(request_id, None)  # the oldest goes when more than max_kept were seen
        super()._drop(request_id, t)

    async def wait(self, request_id: str, timeout: float) -> Ranking:
        """The first ranking for ``request_id``, seen already or within ``timeout`` (else `ScoreTimeout`;
        a later wait on the same id may still get it)."""
        if request_id in self.rankings:
            return self.rankings[request_id]
        if request_id not in self._tracked:
            self._tracked[request_id] = _Tracked(time.monotonic() + self.ttl_s)
            self._bound()
        if not await self._settled(self._tracked[request_id], timeout) or request_id not in self.rankings:
            raise ScoreTimeout(request_id, f"no ranking for {request_id} within {timeout:g}s")
        return self.rankings[request_id]

    async def wait_all(self, request_ids: Iterable[str], timeout: float) -> dict[str, Ranking]:
        """Every id's ranking within ``timeout`` in all."""
        ids = list(request_ids)
        deadline = time.monotonic() + timeout
        for rid in ids:
            await self.wait(rid, max(0.0, deadline - time.monotonic()))
        return {rid: self.rankings[rid] for rid in ids}

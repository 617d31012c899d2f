"""Micro-batching across requests under a token budget (no Kafka, no engine: pure bookkeeping).

Every candidate of every request becomes one `WorkItem` (its prompt's token ids). Items queue in
arrival order; `TokenBudgetBatcher.next_batch()` hands the engine a batch as soon as either

- the queued prompt tokens reach ``max_batch_tokens`` (or ``max_batch_items``), or
- the oldest queued item has waited ``max_wait_s`` (small requests don't wait for company),

so one batch may hold many small requests, and one large request is chunked over several batches.

Two lanes: items of online requests (the requests topic) and of bulk requests (the bulk topic, backfills)
queue separately. A batch is filled from the online queue first and takes bulk items only with the budget
left over, so an online request that arrives while bulk work saturates the engine is in the next batch.
An engine that schedules by priority itself (several batches in it at once, online prompts first at every
step: engine/driver.py) gets batches of one lane each instead (``mix_lanes=False``), and the caller says
which lanes may be cut now (``lanes``: bulk only while the engine has room for it).
Scores flow back into each item's `RequestState`; the request is complete when its last item is.
Items of a request that is past its deadline when its batch is cut are dropped, not scored late.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from schemas import CandidateError, ScoreRequest

Lane = Literal["online", "bulk"]
LANES: tuple[Lane, ...] = ("online", "bulk")  # in priority order


class RecordKey(NamedTuple):
    topic: str
    partition: int
    offset: int


@dataclass(eq=False)
class RequestState:
    """One request in flight: where it came from, what is scored so far, and what failed."""

    req: ScoreRequest
    key: RecordKey  # where the request record came from: its offset is committed once this is answered
    received_at: float
    job_ids: list[str] = field(default_factory=list)  # candidates with a prompt, in item order
    scores: list[float | None] = field(default_factory=list)
    errors: list[CandidateError] = field(default_factory=list)
    raw_fallback: list[str] = field(default_factory=list)
    candidates_total: int = 0
    remaining: int = 0
    timed_out: bool = False
    fetch_ms: float = 0.0
    score_ms: float = 0.0
    # The request record's W3C trace context (schemas/headers.py), copied onto its ranking.
    trace: list[tuple[str, bytes]] = field(default_factory=list)
    lane: Lane = "online"  # which requests topic it came from
    # OpenTelemetry spans (jobscore/tracing.py) when tracing is on: the request's, and its scoring stage's.
    span: Any = None
    score_span: Any = None

    def expired(self, now: float) -> bool:
        return self.req.deadline is not None and now > self.req.deadline

    def finish_item(self, index: int, score: float | None) -> bool:
        """Record one candidate's score (None: not scored); True when this was the request's last."""
        self.scores[index] = score
        self.remaining -= 1
        return self.remaining == 0


@dataclass(eq=False, slots=True)
class WorkItem:
    state: RequestState
    index: int  # position in state.job_ids / state.scores
    tokens: Sequence[int]
    enqueued_at: float
    cache_key: str | None = None  # its score cache key, when the score cache is on


class TokenBudgetBatcher:
    """Queue of work items; batches cut by token budget, item cap or the oldest item's wait."""

    def __init__(
        self,
        max_batch_tokens: int,
        max_batch_items: int,
        max_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        max_bulk_items: int | None = None,
    ) -> None:
        assert max_batch_tokens > 0 and max_batch_items > 0 and max_wait_s >= 0
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_items = max_batch_items
        self.max_wait_s = max_wait_s
        # Bulk pairs per batch: for an engine that takes one batch at a time, an online request arriving while a
        # batch runs waits for it; a small bulk share keeps that wait short (bulk still gets every idle cycle).
        self.max_bulk_items = max_bulk_items or max_batch_items
        self._clock = clock
        self._wall = wall
        self._queues: dict[Lane, deque[WorkItem]] = {lane: deque() for lane in LANES}
        self._queued_tokens = 0
        self._changed = asyncio.Event()
        self._cuts = asyncio.Event()  # set whenever the engine takes a batch: queued work shrank
        self._closed = False
        self._finished: list[RequestState] = []

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def queued(self, lane: Lane) -> int:
        """Items queued in one lane."""
        return len(self._queues[lane])

    def _oldest(self, lanes: Sequence[Lane] = LANES) -> WorkItem | None:
        heads = [self._queues[lane][0] for lane in lanes if self._queues[lane]]
        return min(heads, key=lambda it: it.enqueued_at) if heads else None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    def put(self, items: Sequence[WorkItem]) -> None:
        for it in items:
            self._queues[it.state.lane].append(it)
            self._queued_tokens += len(it.tokens)
        if items:
            self._changed.set()

    def close(self) -> None:
        """No more items will come: hand out what is queued without waiting, then return empty batches."""
        self._closed = True
        self._changed.set()

    def _full(self, lanes: Sequence[Lane] = LANES) -> bool:
        if len(lanes) == len(LANES):
            return self._queued_tokens >= self.max_batch_tokens or len(self) >= self.max_batch_items
        queued = [it for lane in lanes for it in self._queues[lane]]
        return len(queued) >= self.max_batch_items or sum(len(it.tokens) for it in queued) >= self.max_batch_tokens

    def poke(self) -> None:
        """Wake `next_batch` to look again (the lanes it may cut from changed: the engine made room)."""
        self._changed.set()

    async def next_batch(
        self, lanes: Callable[[], Sequence[Lane]] | None = None, *, mix_lanes: bool = True
    ) -> list[WorkItem]:
        """Wait for a batch worth cutting (see module docstring); [] only once closed and empty.

        ``lanes``, asked again whenever the queue changes or `poke` is called: the lanes a batch may be cut
        from now (default both). ``mix_lanes=False``: a batch holds one lane's items, online first."""
        while True:
            allowed = LANES if lanes is None else lanes()
            oldest = self._oldest(allowed)
            if oldest is not None and (self._closed or self._full(allowed)):
                return self._cut(allowed, mix_lanes)
            if oldest is not None:
                waited = self._clock() - oldest.enqueued_at
                if waited >= self.max_wait_s:
                    return self._cut(allowed, mix_lanes)
                timeout: float | None = self.max_wait_s - waited
            elif self._closed and not len(self):
                return []
            else:
                timeout = None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    def _cut(self, lanes: Sequence[Lane] = LANES, mix_lanes: bool = True) -> list[WorkItem]:
        batch: list[WorkItem] = []
        tokens = 0
        now = self._wall()
        for lane in lanes:  # online first; bulk fills what budget is left
            if batch and not mix_lanes:
                break
            queue = self._queues[lane]
            cap = (
                self.max_batch_items
                if lane == "online"
                else min(self.max_batch_items, len(batch) + self.max_bulk_items)
            )
            while queue and len(batch) < cap:
                it = queue[0]
                n = len(it.tokens)
                # The first item always goes (a prompt longer than the budget still has to be scored).
                if batch and tokens + n > self.max_batch_tokens:
                    break
                queue.popleft()
                self._queued_tokens -= n
                st = it.state
                if st.timed_out or st.expired(now):
                    st.timed_out = True
                    if st.finish_item(it.index, None):
                        self._finished.append(st)
                    continue
                batch.append(it)
                tokens += n
            if queue:  # this lane still has work: no spare capacity for the next one
                break
        self._cuts.set()
        return batch

    async def wait_cut(self) -> None:
        """Until the engine next takes a batch (the queue shrank): intake waits here when a lane is full."""
        self._cuts.clear()
        await self._cuts.wait()

    def take_finished(self) -> list[RequestState]:
        """Requests completed while cutting (their remaining items were dropped as expired)."""
        out, self._finished = self._finished, []
        return out

    def drop(self, predicate: Callable[[RequestState], bool]) -> list[RequestState]:
        """Remove queued items whose request matches (e.g. its partition was revoked)."""
        dropped: dict[int, RequestState] = {}
        for lane, queue in self._queues.items():
            kept: deque[WorkItem] = deque()
            for it in queue:
                if predicate(it.state):
                    dropped[id(it.state)] = it.state
                    self._queued_tokens -= len(it.tokens)
                else:
                    kept.append(it)
            self._queues[lane] = kept
        return list(dropped.values())


def batch_stats(batch: Sequence[WorkItem]) -> dict[str, Any]:
    return {
        "items": len(batch),
        "tokens": sum(len(it.tokens) for it in batch),
        "requests": len({id(it.state) for it in batch}),
    }

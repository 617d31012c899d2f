"""Which offsets may be committed: per partition, only up to the first record not yet answered.

Requests finish out of order (a small request overtakes a large one; an invalid one is answered at
once). A partition's committed offset may only pass a record once its answer is acknowledged by the
broker, so the commit point is the end of the *contiguous* run of done offsets (faust: acked 34 35 36
40 → commit 37). Records after a gap are redelivered after a crash; their rankings are deduplicated
downstream by request id.
"""

from __future__ import annotations

from collections import deque

from aiokafka import TopicPartition


class OffsetTracker:
    def __init__(self) -> None:
        self._order: dict[TopicPartition, deque[int]] = {}
        self._done: dict[TopicPartition, set[int]] = {}

    def add(self, tp: TopicPartition, offset: int) -> None:
        """Register a consumed record; records of a partition must be added in offset order."""
        q = self._order.setdefault(tp, deque())
        assert not q or offset > q[-1], f"offsets must increase per partition ({tp}: {offset} after {q[-1]})"
        q.append(offset)
        self._done.setdefault(tp, set())

    def done(self, tp: TopicPartition, offset: int) -> None:
        """The record's answer is durable. Unknown partitions (revoked meanwhile) are ignored."""
        if tp in self._done:
            self._done[tp].add(offset)

    def committable(self) -> dict[TopicPartition, int]:
        """Advance each partition past its contiguous done prefix; return the new commit offsets."""
        out: dict[TopicPartition, int] = {}
        for tp, q in self._order.items():
            done = self._done[tp]
            last = None
            while q and q[0] in done:
                last = q.popleft()
                done.discard(last)
            if last is not None:
                out[tp] = last + 1
        return out

    def in_flight(self, tps: set[TopicPartition] | None = None) -> int:
        """Records consumed but not yet answered."""
        return sum(len(q) - len(self._done[tp]) for tp, q in self._order.items() if tps is None or tp in tps)

    def forget(self, tps: set[TopicPartition]) -> None:
        """Drop revoked partitions: their uncommitted records belong to the next owner now."""
        for tp in tps:
            self._order.pop(tp, None)
            self._done.pop(tp, None)

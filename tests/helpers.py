"""Helpers the test modules share: running a service, seeding summaries, reading offsets, gating an engine,
reading a child's output. One module, so no test module imports another's helpers (issue 27)."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psutil
from aiokafka import TopicPartition

from client import tail
from jobscore.cache import SummaryCache
from jobscore.kafka import make_consumer
from jobscore.settings import CommonSettings, SummarizerSettings, WorkerSettings
from schemas import SCORE_REQUESTS, JobPosted, ScoreRequest
from summarizer.service import Summarizer
from summarizer.writer import build_records
from tests.conftest import WAIT_S
from worker.loop import Worker


@contextlib.asynccontextmanager
async def running(
    svc: Worker | Summarizer, *, faults: bool = False, wait_s: float = WAIT_S
) -> AsyncIterator[asyncio.Task[None]]:
    """Start a service, run it in a task, and on exit stop it, wait for its drain and close it.

    By default an error its ``run()`` ends with, or a drain that hangs, fails the test that used it. With
    ``faults=True`` (tests that inject faults) the error stays on the task for the test to inspect and
    assert on: the injected fault is the point, not a failure of the test."""
    await svc.start()
    task = asyncio.create_task(svc.run())
    try:
        yield task
    finally:
        svc.stop()
        try:
            if faults:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(task), wait_s)
            else:
                await asyncio.wait_for(task, wait_s)
        finally:
            await svc.close()


async def seed(s: WorkerSettings, items: Sequence[JobPosted]) -> None:
    """Write summaries straight into the cache (the summarizer's path has its own tests)."""
    cache = SummaryCache.from_url(s.redis_url, s.summarizer_version)
    await cache.write(build_records(items, s.summarizer_version, 128))
    await cache.close()


async def committed_offsets(s: WorkerSettings) -> dict[int, int | None]:
    consumer = make_consumer(s, s.group_id)
    await consumer.start()
    try:
        await consumer.topics()
        parts = consumer.partitions_for_topic(s.topic_requests) or set()
        return {p: await consumer.committed(TopicPartition(s.topic_requests, p)) for p in sorted(parts)}
    finally:
        await consumer.stop()


async def next_offsets(s: WorkerSettings, count: int) -> dict[int, int]:
    """Per partition, the offset after the last of ``count`` records on the requests topic.

    Read from the records themselves: tansu reports the high watermark of a batched produce as the
    batch's base offset + 1, so ListOffsets(latest) is not a reliable "end" on the embedded broker.
    """
    out: dict[int, int] = {}
    async for rec, _ in tail(s, SCORE_REQUESTS, from_beginning=True, limit=count, idle_exit_s=WAIT_S):
        out[rec.partition] = max(out.get(rec.partition, 0), rec.offset + 1)
    return out


async def request_positions(s: WorkerSettings, count: int) -> dict[str, tuple[int, int]]:
    """``request_id → (partition, offset)`` for the first ``count`` records on the requests topic."""
    out: dict[str, tuple[int, int]] = {}
    async for rec, msg in tail(s, SCORE_REQUESTS, from_beginning=True, limit=count, idle_exit_s=WAIT_S):
        if isinstance(msg, ScoreRequest):
            out[msg.request_id] = (rec.partition, rec.offset)
    return out


def committed_ids(positions: dict[str, tuple[int, int]], committed: dict[int, int | None]) -> set[str]:
    """The request ids a group's committed offsets cover (offset below the partition's commit)."""
    return {rid for rid, (p, off) in positions.items() if off < (committed.get(p) or 0)}


class GatedEngine:
    """The real engine behind a gate: scoring waits until the test opens it (the worker is not mocked)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.info = engine.info
        self.max_model_len = engine.max_model_len
        self.tokenizer = engine.tokenizer
        self.gate = threading.Event()
        self.waiting = threading.Event()  # set once a call waits at the closed gate
        self._lock = threading.Lock()

    def shut(self) -> None:
        """Close the gate again: calls from now on wait there (``waiting`` says when one does)."""
        with self._lock:
            self.waiting.clear()
            self.gate.clear()

    def score_tokens(self, prompts: Sequence[Sequence[int]]) -> list[float]:
        # Decided under the lock: a call that found the gate open goes on even if it shuts right after, so
        # `waiting` is never missing for a call that waits.
        with self._lock:
            closed = not self.gate.is_set()
            if closed:
                self.waiting.set()
        if closed:
            assert self.gate.wait(WAIT_S), "the test never opened the gate"
        return list(self.engine.score_tokens(prompts))

    def score(self, prompts: Sequence[str]) -> list[float]:
        return list(self.engine.score(prompts))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return list(self.engine.count_tokens(texts))

    def close(self) -> None:
        pass


async def committed(s: CommonSettings, group_id: str, topic: str) -> dict[int, int | None]:
    """The group's committed offset per partition of ``topic`` (None: never committed)."""
    consumer = make_consumer(s, group_id)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(s.topic_partitions)}
    finally:
        await consumer.stop()


class Lines:
    """A child's output lines, read in a thread so the test can wait on one with a timeout."""

    def __init__(self, stream: object) -> None:
        self.q: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._pump_thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._pump_thread.start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.q.put(line)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.q.get(timeout=0.5)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} after {timeout:.0f}s; got:\n{''.join(self.seen[-30:])}")

    def all(self, timeout: float) -> str:
        """Everything the child printed, once its output has ended (it exited)."""
        self._pump_thread.join(timeout)
        while not self.q.empty():
            self.seen.append(self.q.get_nowait())
        return "".join(self.seen)


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


async def all_present(cache: SummaryCache, ids: list[str]) -> bool:
    return all(r is not None for r in await cache.get_many(ids))


async def committed_total(s: SummarizerSettings) -> int:
    consumer = make_consumer(s, s.group_id)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(s.topic_postings) or set()
        if not parts:
            await consumer.topics()
            parts = consumer.partitions_for_topic(s.topic_postings) or set()
        total = 0
        for p in parts:
            total += await consumer.committed(TopicPartition(s.topic_postings, p)) or 0
        return total
    finally:
        await consumer.stop()

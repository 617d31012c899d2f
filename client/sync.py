"""`SyncScoringClient`: the scoring client for code that is not async (scripts, WSGI web apps, notebooks).

It runs one `ScoringClient` on a private event loop in a background thread; every method blocks until the
loop has done the work, and is safe to call from several threads at once::

    with SyncScoringClient(ClientConfig.from_env()) as c:
        ranking = c.score("python engineer", ["job-1", "job-2"], top_k=1, timeout=30)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, TypeVar

from client.config import ConfigSource
from client.errors import ScoringError
from client.publish import Lane, ScoringClient
from client.results import ReaderStats
from schemas import Ranking, ScoreRequest

T = TypeVar("T")


class SyncScoringClient:
    """Blocking twin of `ScoringClient` (same arguments, same errors). Use as a context manager, or call
    `close()` when done: the loop thread and the Kafka connections live until then."""

    def __init__(
        self,
        source: ConfigSource,
        *,
        reply_topic: str | None = None,
        lane: Lane = "online",
        result_ttl_s: float = 600.0,
        max_tracked: int = 100_000,
        start_timeout_s: float = 60.0,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="jobscore-client-loop", daemon=True)
        self._thread.start()
        self._closed = False

        async def build() -> ScoringClient:
            # Built on the loop thread: aiokafka binds its objects to the running loop.
            c = ScoringClient(
                source, reply_topic=reply_topic, lane=lane, result_ttl_s=result_ttl_s, max_tracked=max_tracked
            )
            return await c.__aenter__()

        try:
            self._client = self._run(build(), start_timeout_s)
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("this SyncScoringClient is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def stats(self) -> ReaderStats:
        return self._client.stats

    def submit(self, request: ScoreRequest, traceparent: bytes | None = None) -> str:
        return self._run(self._client.submit(request, traceparent))

    def result(self, request_id: str, timeout: float) -> Ranking:
        return self._run(self._client.result(request_id, timeout))

    def score(
        self,
        query: str,
        job_ids: Sequence[str],
        *,
        top_k: int = 10,
        timeout: float = 30.0,
        deadline_s: float | None = None,
        request_id: str | None = None,
    ) -> Ranking:
        return self._run(
            self._client.score(
                query, job_ids, top_k=top_k, timeout=timeout, deadline_s=deadline_s, request_id=request_id
            )
        )

    def score_many(
        self,
        queries: Iterable[tuple[str, Sequence[str]]],
        *,
        top_k: int = 10,
        timeout: float = 60.0,
        deadline_s: float | None = None,
    ) -> list[Ranking | ScoringError]:
        return self._run(self._client.score_many(queries, top_k=top_k, timeout=timeout, deadline_s=deadline_s))

    def close(self) -> None:
        """Stop the reader and the producer, then the loop thread. Idempotent."""
        if self._closed:
            return
        try:
            self._run(self._client.__aexit__(None, None, None), 30.0)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10.0)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> SyncScoringClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

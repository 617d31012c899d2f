"""The score cache: P(yes) of (query, job text, model) pairs already scored, in Redis with a TTL.

Repeated pairs are common — a user pages through results, a backfill re-runs after a crash, the same popular
query arrives from many users within minutes — and a cached score costs one MGET instead of an engine call.

**The key is the exact prompt, not the ingredients.** ``jobscore:score:v1:<model>@<revision>/<dtype>:<digest>``
where digest is blake2b-128 of the prompt's token ids. Two pairs share an entry only if the engine would
read the same tokens, so the key covers everything that changes a score: the query, the job's summary
(the summarizer version and the posting's content), the instruction, truncation to ``max_doc_tokens`` and
the raw-description fallback — a (query, content hash, revision) key would miss the last three. A new model
revision or dtype starts from an empty cache; a reposted job with new text gets a new digest; old entries
age out with the TTL.

**The cache may only make things faster, never fail a request.** Reads and writes are single tries with
the service's socket timeout (no backoff): if Redis does not answer, every pair is a miss and is scored,
and a write that fails is dropped. Counted in ``jobscore_worker_score_cache_total{result}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from array import array
from collections.abc import Sequence

import redis.asyncio as aioredis

from jobscore import metrics
from jobscore.cache import REDIS_OUTAGE_ERRORS

log = logging.getLogger(__name__)

KEY_PREFIX = "jobscore:score:v1"
# Writes in flight at once; beyond it a batch's scores are not cached (the engine is faster than Redis
# would have to be, which only happens when Redis is struggling: do not pile up on it).
MAX_PENDING_WRITES = 8


def model_tag(model_id: str, revision: str, dtype: str) -> str:
    """The part of the key naming what computed the score (spaces and colons are not allowed in it)."""
    return f"{model_id}@{revision or 'unversioned'}/{dtype}".replace(" ", "_").replace(":", "_")


def prompt_digest(tokens: Sequence[int]) -> str:
    """blake2b-128 of the token ids as little-endian int32: the same prompt always gives the same digest."""
    a = array("i", tokens)
    if array("i", [1]).tobytes()[0] != 1:  # big-endian host: keep keys portable across workers
        a.byteswap()
    return hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest()


class ScoreCache:
    """MGET of cached scores; SET EX of new ones in the background. Never raises to the caller."""

    def __init__(self, client: aioredis.Redis, tag: str, ttl_s: int) -> None:
        assert ttl_s > 0, "a score cache without a TTL would keep every pair forever"
        self.client = client
        self.tag = tag
        self.ttl_s = ttl_s
        self._writes: set[asyncio.Task[None]] = set()

    def key(self, tokens: Sequence[int]) -> str:
        return f"{KEY_PREFIX}:{self.tag}:{prompt_digest(tokens)}"

    async def get_many(self, keys: Sequence[str]) -> list[float | None]:
        """The cached score per key (None: a miss). Redis unavailable: all misses (counted as errors)."""
        if not keys:
            return []
        try:
            raw = await self.client.mget(list(keys))
        except REDIS_OUTAGE_ERRORS as e:
            metrics.SCORE_CACHE.labels("error").inc(len(keys))
            log.debug("score cache read failed; scoring every pair", extra={"error": repr(e)})
            return [None] * len(keys)
        out: list[float | None] = []
        for v in raw:
            try:
                score = float(v) if v is not None else None
            except ValueError:  # not written by us: a miss
                score = None
            out.append(score if score is not None and 0.0 <= score <= 1.0 else None)
        hits = sum(s is not None for s in out)
        metrics.SCORE_CACHE.labels("hit").inc(hits)
        metrics.SCORE_CACHE.labels("miss").inc(len(out) - hits)
        return out

    def put_many(self, entries: Sequence[tuple[str, float]]) -> None:
        """Store scores in the background (one pipeline); dropped when too many writes are pending."""
        if not entries:
            return
        if len(self._writes) >= MAX_PENDING_WRITES:
            metrics.SCORE_CACHE_WRITES.labels("skipped").inc(len(entries))
            return
        task = asyncio.create_task(self._write(list(entries)))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, entries: list[tuple[str, float]]) -> None:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, score in entries:
                    pipe.set(key, repr(float(score)), ex=self.ttl_s)
                await pipe.execute()
            metrics.SCORE_CACHE_WRITES.labels("ok").inc(len(entries))
        except REDIS_OUTAGE_ERRORS as e:
            metrics.SCORE_CACHE_WRITES.labels("error").inc(len(entries))
            log.debug("score cache write failed; dropped", extra={"error": repr(e), "pairs": len(entries)})

    async def flush(self) -> None:
        """Wait for the writes in flight (shutdown, tests)."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

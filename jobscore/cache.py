"""The summary cache in Redis, shared by the summarizer (writer) and the scoring workers (readers).

The stored format (key, record, content hash) is `schemas.summary`; this module is the Redis access:
pipelined reads and writes, one round trip per batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis
from pydantic import SecretStr

from schemas.summary import SummaryRecord, decode_record, encode_record, summary_key


class InvalidSummary(ValueError):
    pass


class SummaryCache:
    """Pipelined reads and writes; one network round trip per batch either way."""

    def __init__(self, client: aioredis.Redis, version: str, ttl_s: int = 0) -> None:
        self.client = client
        self.version = version
        self.ttl_s = ttl_s

    @classmethod
    def from_url(cls, url: str | SecretStr, version: str, ttl_s: int = 0) -> SummaryCache:
        """``url``: settings.redis_url (a secret: it may carry the password) or a plain string."""
        url = url.get_secret_value() if isinstance(url, SecretStr) else url
        # hiredis is picked up automatically when installed (parsing large MGET replies in C).
        return cls(aioredis.Redis.from_url(url, decode_responses=False), version, ttl_s)

    async def close(self) -> None:
        await self.client.aclose()

    async def get_many(self, job_ids: Sequence[str]) -> list[SummaryRecord | InvalidSummary | None]:
        """One MGET. Per id: the record, None when absent, or `InvalidSummary` when undecodable."""
        if not job_ids:
            return []
        raw = await self.client.mget([summary_key(self.version, j) for j in job_ids])
        out: list[SummaryRecord | InvalidSummary | None] = []
        for value in raw:
            if value is None:
                out.append(None)
                continue
            try:
                out.append(decode_record(value))
            except (msgspec.DecodeError, msgspec.ValidationError) as e:
                out.append(InvalidSummary(f"undecodable cache entry: {e}"))
        return out

    async def hashes(self, job_ids: Sequence[str]) -> list[str | None]:
        """Content hashes of the cached entries (None where absent or unreadable)."""
        recs = await self.get_many(job_ids)
        return [r.content_hash if isinstance(r, SummaryRecord) else None for r in recs]

    async def write(self, puts: Sequence[SummaryRecord], deletes: Sequence[str] = ()) -> None:
        """Apply puts and deletes in one pipeline (MULTI/EXEC: all or nothing)."""
        if not puts and not deletes:
            return
        async with self.client.pipeline(transaction=True) as pipe:
            for rec in puts:
                pipe.set(summary_key(self.version, rec.job_id), encode_record(rec), ex=self.ttl_s or None)
            if deletes:
                pipe.delete(*[summary_key(self.version, j) for j in deletes])
            await pipe.execute()

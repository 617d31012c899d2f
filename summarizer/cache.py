"""The summary cache in Redis, shared by the summarizer (writer) and the scoring workers (readers).

Key: ``jobscore:summary:{summarizer_version}:{job_id}`` — the version is part of the key, so a new
summarizer writes beside the old one and workers read exactly the version they are configured for.
Value: a msgpack `SummaryRecord` that carries the source content hash (re-posting unchanged text does
not re-summarize), the mode and token counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis

KEY_PREFIX = "jobscore:summary"


class SummaryRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    job_id: str
    version: str
    mode: str
    summary: str
    content_hash: str
    raw_tokens: int
    summary_tokens: int
    created_at: float
    title: str = ""
    # The raw description, kept only when the deployment enables the raw-text fallback.
    raw: str | None = None


_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder(SummaryRecord)


class InvalidSummary(ValueError):
    pass


def summary_key(version: str, job_id: str) -> str:
    return f"{KEY_PREFIX}:{version}:{job_id}"


class SummaryCache:
    """Pipelined reads and writes; one network round trip per batch either way."""

    def __init__(self, client: aioredis.Redis, version: str, ttl_s: int = 0) -> None:
        self.client = client
        self.version = version
        self.ttl_s = ttl_s

    @classmethod
    def from_url(cls, url: str, version: str, ttl_s: int = 0) -> SummaryCache:
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
                out.append(_DEC.decode(value))
            except msgspec.DecodeError as e:
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
                pipe.set(summary_key(self.version, rec.job_id), _ENC.encode(rec), ex=self.ttl_s or None)
            if deletes:
                pipe.delete(*[summary_key(self.version, j) for j in deletes])
            await pipe.execute()

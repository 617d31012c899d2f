"""The summary cache in Redis, shared by the summarizer (writer) and the scoring workers (readers).

The stored format (key, record, content hash) is `schemas.summary`; this module is the Redis access:
pipelined reads and writes, one round trip per batch. Services build it with `SummaryCache.for_service`:
every call then has a socket timeout (a stalled Redis is an error, not a hang) and is retried with
backoff (jobscore/retry.py); after the last try it raises `CacheUnavailable`, and the service's outage
policy takes over (docs/operating.md "Faults and recovery").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import msgspec
import redis.asyncio as aioredis
import redis.exceptions
from pydantic import SecretStr

from jobscore import metrics
from jobscore.retry import Backoff, Outage, retry
from schemas.summary import SummaryRecord, decode_record, encode_record, summary_key

if TYPE_CHECKING:
    from jobscore.settings import CommonSettings

T = TypeVar("T")

# What a Redis outage looks like to redis-py: refused/reset connections, socket timeouts (a stall),
# "loading the dataset" after a restart. Anything else (a bad command) is a bug and is not retried.
REDIS_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)

# One per process (a process talks to one Redis): logs once per outage, drives HEALTH "redis".
REDIS_OUTAGE = Outage("redis", metrics.REDIS_ERRORS)


class InvalidSummary(ValueError):
    pass


class CacheUnavailable(RuntimeError):
    """Redis did not answer within the configured tries; the service's outage policy decides what next."""


class CacheAuthFailed(RuntimeError):
    """Redis refused the login: a configuration error, not an outage, so it is never retried."""


# No password where one is required (NOAUTH), or a wrong one (WRONGPASS); redis-py raises both as
# AuthenticationError, a ConnectionError, i.e. an "outage" above: it becomes CacheAuthFailed first.
REDIS_AUTH_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.AuthenticationError,)


class SummaryCache:
    """Pipelined reads and writes; one network round trip per batch either way."""

    def __init__(
        self, client: aioredis.Redis, version: str, ttl_s: int = 0, attempts: int = 1, backoff: Backoff | None = None
    ) -> None:
        self.client = client
        self.version = version
        self.ttl_s = ttl_s
        self.attempts = attempts
        self.backoff = backoff or Backoff()

    @classmethod
    def for_service(cls, settings: CommonSettings, version: str, ttl_s: int = 0) -> SummaryCache:
        """The cache as the services use it: socket timeouts and retries from the settings."""
        given = settings.redis_url
        url = given.get_secret_value() if isinstance(given, SecretStr) else str(given)
        client = aioredis.Redis.from_url(
            url,
            decode_responses=False,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
        )
        return cls(client, version, ttl_s, settings.redis_retry_attempts, Backoff(max_s=settings.redis_retry_max_s))

    def sibling(self, version: str) -> SummaryCache:
        """Another cache version on the same client and retry policy."""
        return SummaryCache(self.client, version, self.ttl_s, self.attempts, self.backoff)

    def _auth_failed(self, err: BaseException) -> CacheAuthFailed:
        kw = self.client.connection_pool.connection_kwargs
        where = f"{kw.get('host', kw.get('path', '?'))}:{kw.get('port', '')}"
        return CacheAuthFailed(
            f"Redis at {where} refused the login ({err}): put the password in JOBSCORE_REDIS_URL, "
            "redis://:PASSWORD@host:6379/0 (an ACL user: redis://USER:PASSWORD@...; URL-encode special "
            "characters; rediss:// for TLS)"
        )

    async def _call(self, op: str, fn: Callable[[], Awaitable[T]]) -> T:
        async def once() -> T:
            try:
                return await fn()
            except REDIS_AUTH_ERRORS as e:
                raise self._auth_failed(e) from e

        try:
            return await retry(
                once,
                op=op,
                retry_on=REDIS_OUTAGE_ERRORS,
                attempts=self.attempts,
                backoff=self.backoff,
                outage=REDIS_OUTAGE,
            )
        except REDIS_OUTAGE_ERRORS as e:
            raise CacheUnavailable(f"Redis {op} failed {self.attempts} times: {type(e).__name__}: {e}") from e

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
        keys = [summary_key(self.version, j) for j in job_ids]
        raw = await self._call("get_many", lambda: self.client.mget(keys))
        out: list[SummaryRecord | InvalidSummary | None] = []
        for value in raw:
            if value is None:
                out.append(None)
                continue
            try:
                out.append(decode_record(value if isinstance(value, bytes) else value.encode()))
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

        async def apply() -> None:
            async with self.client.pipeline(transaction=True) as pipe:
                for rec in puts:
                    pipe.set(summary_key(self.version, rec.job_id), encode_record(rec), ex=self.ttl_s or None)
                if deletes:
                    pipe.delete(*[summary_key(self.version, j) for j in deletes])
                await pipe.execute()

        # MULTI/EXEC with idempotent values: a retry after an unknown outcome writes the same thing again.
        await self._call("write", apply)

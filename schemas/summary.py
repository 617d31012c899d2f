"""The stored summary format: what the summarizer writes to Redis and the workers read.

The two services meet only here and in Redis: the key function, the record and the content hash
(the summarizer's idempotency key and the worker's prompt-cache key) are defined once.

Key: ``jobscore:summary:{summarizer_version}:{job_id}`` — the version is part of the key, so a new
summarizer writes beside the old one and workers read exactly the version they are configured for.
Value: a msgpack `SummaryRecord`.
"""

from __future__ import annotations

import hashlib
from typing import Optional

import msgspec

from schemas.messages import JobPosted

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
    raw: Optional[str] = None


def summary_key(version: str, job_id: str) -> str:
    return f"{KEY_PREFIX}:{version}:{job_id}"


def content_hash(p: JobPosted) -> str:
    """Hash of the text a summary is made from: unchanged text is not re-summarized or re-tokenized."""
    h = hashlib.sha256()
    for part in (p.title, p.company, p.location, p.description):
        h.update(part.encode())
        h.update(b"\x1f")
    return h.hexdigest()[:32]


_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder(SummaryRecord)


def encode_record(rec: SummaryRecord) -> bytes:
    return _ENC.encode(rec)


def decode_record(data: bytes) -> SummaryRecord:
    """Raises `msgspec.DecodeError` (or `msgspec.ValidationError`) on a value that is not a record."""
    return _DEC.decode(data)

"""Every topic, declared once: its role, value types (all versions) and a typed codec built at import.

Code passes these objects around, never bare topic names; the physical name comes from settings
(``TopicNames``) so a deployment can prefix or rename topics without touching code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, Union, cast

import msgspec

from schemas.messages import (
    MAX_DEAD_LETTER_KEY_BYTES,
    MAX_DEAD_LETTER_ORIGINAL_BYTES,
    MAX_DESCRIPTION_CHARS,
    MAX_ID_CHARS,
    MAX_REASON_CHARS,
    MAX_TITLE_CHARS,
    DeadLetter,
    DecodeErrorKind,
    JobPosted,
    JobSummarized,
    Message,
    Ranking,
    ScoreRequest,
)

M = TypeVar("M", bound=Message)

ErrorKind = DecodeErrorKind

# msgspec's ValidationError carries only its message; which constraint failed is read from the one
# phrase msgspec uses for max_length/max_items ("Expected `str` of length <= 128", "array of length <=").
_TOO_LONG = re.compile(r"of length <= \d+")


class _Tag(msgspec.Struct):
    """Just the tag of any JSON object: how a failed decode is told apart (unknown version vs bad field)."""

    schema: Any = None


class _NoSuchVersion(Message, tag="__jobscore_no_such_version__", frozen=True):
    """Never sent. A second union member makes msgspec require the tag even on one-version topics (it
    treats a single tagged type's tag as optional), so an untagged message is never guessed to be v1."""


_TAG_DECODER = msgspec.json.Decoder(_Tag)


class SchemaError(ValueError):
    """Bytes that are not a valid message for a topic. ``kind`` is a stable label for metrics/DLQ."""

    def __init__(self, kind: ErrorKind, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind: ErrorKind = kind
        self.reason = reason


@dataclass(frozen=True)
class TopicSpec(Generic[M]):
    """A topic's contract. ``max_bytes`` bounds a single value before it is parsed at all."""

    role: str
    types: tuple[type[M], ...]
    max_bytes: int
    _decoder: msgspec.json.Decoder[Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # typing.Union, not `|`: types only support `|` from Python 3.10 (jobscore-client supports 3.9).
        members = (_NoSuchVersion, *self.types)
        union: Any = Union[members]
        object.__setattr__(self, "_decoder", msgspec.json.Decoder(union))

    @property
    def tags(self) -> list[str]:
        return [str(t.__struct_config__.tag) for t in self.types]

    def decode(self, data: bytes | None) -> M:
        """Decode one value or raise `SchemaError` with a reason a human can act on — and nothing else:
        any bytes at all either decode or raise `SchemaError` (fuzzed in tests/test_schemas.py)."""
        if data is None:
            raise SchemaError("malformed", "message has no value (null)")
        if len(data) > self.max_bytes:
            raise SchemaError(
                "oversized", f"message is {len(data)} bytes; the {self.role} topic accepts <= {self.max_bytes}"
            )
        try:
            msg = self._decoder.decode(data)
        except msgspec.ValidationError as e:
            raise self._classify(data, str(e)) from None
        except msgspec.DecodeError as e:
            raise SchemaError("malformed", f"not valid JSON: {e}") from None
        except UnicodeDecodeError as e:
            # msgspec validates UTF-8 only in strings it keeps; a bad byte there raises this, not DecodeError.
            raise SchemaError("malformed", f"invalid UTF-8 at byte {e.start}: {e.reason}") from None
        except Exception as e:  # a decoder bug must not become a poison pill either
            raise SchemaError("malformed", f"undecodable: {type(e).__name__}: {e}") from None
        if isinstance(msg, _NoSuchVersion):
            raise SchemaError("unknown_schema", f"the {self.role} topic accepts schema in {self.tags}")
        return cast(M, msg)

    def _classify(self, data: bytes, text: str) -> SchemaError:
        try:
            tag = _TAG_DECODER.decode(data).schema
        except Exception:
            return SchemaError("invalid", text)  # not a JSON object: the message says what it is
        if tag not in self.tags:
            given = "no `schema` field" if tag is None else f"schema {tag!r}"
            return SchemaError("unknown_schema", f"{given}; the {self.role} topic accepts schema in {self.tags}")
        if _TOO_LONG.search(text):
            return SchemaError("oversized", text)
        return SchemaError("invalid", text)

    @staticmethod
    def encode(msg: Message) -> bytes:
        return _ENCODER.encode(msg)


_ENCODER = msgspec.json.Encoder()

# --- size limits, all derived here so the clients, the topics and the dead letters agree --------------

# The largest record any of our clients fetches (consumer max_partition_fetch_bytes) or produces (producer
# max_request_size). Records up to this size are consumed and, when over their topic's max_bytes,
# dead-lettered as "oversized"; every value we produce is <= its topic's max_bytes <= this.
MAX_RECORD_BYTES = 8 * 1024 * 1024


def _base64_len(n: int) -> int:
    return 4 * ((n + 2) // 3)


# A dead letter's worst case: the cut original and key (base64 in JSON), the reason (<= 6 bytes per char
# once JSON-escaped as \uXXXX), and the fixed fields (topic names <= 249 chars, ids, hash) with room.
DEAD_LETTER_MAX_BYTES = (
    _base64_len(MAX_DEAD_LETTER_ORIGINAL_BYTES) + _base64_len(MAX_DEAD_LETTER_KEY_BYTES) + 6 * MAX_REASON_CHARS + 16_384
)

# JSON's worst case per character: an astral character (emoji) written as a surrogate-pair escape,
# "\ud83d\ude00" = 12 bytes for one character of the decoded string.
JSON_MAX_BYTES_PER_CHAR = 12

# A posting's byte cap follows from its character caps, so a posting within every character limit is never
# "oversized" in bytes however its producer escapes it. A request's does not: 10k ids of 128 chars escaped
# worst-case would be 15 MB. Requests over 2 MB are dead-lettered as "oversized" (ASCII ids: ~1.4 MB).
POSTINGS_MAX_BYTES = JSON_MAX_BYTES_PER_CHAR * (MAX_DESCRIPTION_CHARS + 3 * MAX_TITLE_CHARS + MAX_ID_CHARS) + 4_096
POSTINGS: TopicSpec[JobPosted] = TopicSpec("postings", (JobPosted,), max_bytes=POSTINGS_MAX_BYTES)
SCORE_REQUESTS: TopicSpec[ScoreRequest] = TopicSpec("requests", (ScoreRequest,), max_bytes=2_000_000)
# The bulk lane: the same requests from backfills and batch jobs, on their own topic so the worker can serve
# online work first (a topic per lane, not a priority field: a field would still queue bulk ahead of online
# in the partition's log, and only a separate topic can be paused, sized and lag-monitored on its own).
SCORE_REQUESTS_BULK: TopicSpec[ScoreRequest] = TopicSpec("requests.bulk", (ScoreRequest,), max_bytes=2_000_000)
RANKINGS: TopicSpec[Ranking] = TopicSpec("rankings", (Ranking,), max_bytes=4_000_000)
# Readiness: one `job_summarized.v1` per posting summarized (compacted by job id), for clients to wait on.
SUMMARIES: TopicSpec[JobSummarized] = TopicSpec("summaries", (JobSummarized,), max_bytes=16_384)
DEAD_LETTERS: TopicSpec[DeadLetter] = TopicSpec("dead-letters", (DeadLetter,), max_bytes=DEAD_LETTER_MAX_BYTES)

ALL_TOPICS: tuple[TopicSpec[Any], ...] = (
    POSTINGS,
    SCORE_REQUESTS,
    SCORE_REQUESTS_BULK,
    RANKINGS,
    DEAD_LETTERS,
    SUMMARIES,
)

assert all(t.max_bytes < MAX_RECORD_BYTES for t in ALL_TOPICS), "every topic's values must fit one client record"
assert max(POSTINGS.max_bytes, SCORE_REQUESTS.max_bytes) <= MAX_DEAD_LETTER_ORIGINAL_BYTES, "keep valid inputs whole"

"""Every topic, declared once: its role, value types (all versions) and a typed codec built at import.

Code passes these objects around, never bare topic names; the physical name comes from settings
(``TopicNames``) so a deployment can prefix or rename topics without touching code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import msgspec

from schemas.messages import DeadLetter, JobPosted, Message, Ranking, ScoreRequest

M = TypeVar("M", bound=Message)

ErrorKind = Literal["malformed", "unknown_schema", "invalid", "oversized"]

# msgspec's ValidationError carries only its message; which constraint failed is read from the one
# phrase msgspec uses for max_length/max_items ("Expected `str` of length <= 128", "array of length <=").
_TOO_LONG = re.compile(r"of length <= \d+")


class _Tag(msgspec.Struct):
    """Just the tag of any JSON object: how a failed decode is told apart (unknown version vs bad field)."""

    schema: Any = None


class _NoSuchVersion(Message, tag="__jobscore_no_such_version__"):
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
        union: Any = _NoSuchVersion
        for t in self.types:
            union = union | t
        object.__setattr__(self, "_decoder", msgspec.json.Decoder(union))

    @property
    def tags(self) -> list[str]:
        return [t.__struct_config__.tag for t in self.types]  # type: ignore[attr-defined]

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
        return msg  # type: ignore[no-any-return]

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

# Sizes: a description is capped at 100k chars (up to ~4 bytes each in UTF-8, plus JSON escaping);
# a request at 10k ids of <= 128 chars.
POSTINGS: TopicSpec[JobPosted] = TopicSpec("postings", (JobPosted,), max_bytes=1_000_000)
SCORE_REQUESTS: TopicSpec[ScoreRequest] = TopicSpec("requests", (ScoreRequest,), max_bytes=2_000_000)
RANKINGS: TopicSpec[Ranking] = TopicSpec("results", (Ranking,), max_bytes=4_000_000)
DEAD_LETTERS: TopicSpec[DeadLetter] = TopicSpec("dead-letters", (DeadLetter,), max_bytes=8_000_000)

ALL_TOPICS: tuple[TopicSpec[Any], ...] = (POSTINGS, SCORE_REQUESTS, RANKINGS, DEAD_LETTERS)

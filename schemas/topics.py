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

_UNKNOWN_TAG = re.compile(r"Invalid value .* - at `\$\.schema`")
_MISSING_TAG = re.compile(r"missing required field `schema`")
_TOO_LONG = re.compile(r"length <= \d+")


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
        union: Any = self.types[0]
        for t in self.types[1:]:
            union = union | t
        object.__setattr__(self, "_decoder", msgspec.json.Decoder(union))

    @property
    def tags(self) -> list[str]:
        return [t.__struct_config__.tag for t in self.types]  # type: ignore[attr-defined]

    def decode(self, data: bytes | None) -> M:
        """Decode one value or raise `SchemaError` with a reason a human can act on."""
        if data is None:
            raise SchemaError("malformed", "message has no value (null)")
        if len(data) > self.max_bytes:
            raise SchemaError(
                "oversized", f"message is {len(data)} bytes; the {self.role} topic accepts <= {self.max_bytes}"
            )
        try:
            msg = self._decoder.decode(data)
        except msgspec.ValidationError as e:
            text = str(e)
            if _UNKNOWN_TAG.search(text) or _MISSING_TAG.search(text):
                raise SchemaError(
                    "unknown_schema", f"{text}; the {self.role} topic accepts schema in {self.tags}"
                ) from None
            if _TOO_LONG.search(text):
                raise SchemaError("oversized", text) from None
            raise SchemaError("invalid", text) from None
        except msgspec.DecodeError as e:
            raise SchemaError("malformed", f"not valid JSON: {e}") from None
        if b'"schema"' not in data:
            # msgspec treats the tag as optional when a topic has a single version; we don't: an
            # untagged message is from an unknown producer and must not be guessed to be v1.
            raise SchemaError(
                "unknown_schema", f"missing the `schema` field; the {self.role} topic accepts {self.tags}"
            )
        return msg  # type: ignore[no-any-return]

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

"""Kafka record headers: part of the wire contract, like the values (schemas/contract/asyncapi.yaml).

Every record we produce carries

- ``content-type: application/json`` — the value's encoding (UTF-8 JSON, one object);
- ``jobscore-schema: <tag>`` — the value's ``schema`` tag (``ranking.v1``), so a router, a dead-letter
  re-drive tool or a consumer that skips unknown versions can decide without parsing the value;
- ``traceparent`` (and ``tracestate``) — W3C Trace Context, copied from the request to its ranking and
  to its dead letter so one trace spans publisher → worker → reader. Only a well-formed ``traceparent``
  is passed on (a malformed one is dropped, as the W3C spec asks of intermediaries).

A dead letter keeps the original record's headers untouched, except the two that describe the original
*value* (``content-type``, ``jobscore-schema``): those move to ``jobscore-original-content-type`` /
``jobscore-original-schema`` because the dead letter's own value is a ``dead_letter.v1``.

Headers are ``(name, bytes)`` pairs, as aiokafka and confluent-kafka both take them. Header values are
advisory: the value's own ``schema`` tag stays authoritative (a record without headers is still valid).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

CONTENT_TYPE = "content-type"
SCHEMA = "jobscore-schema"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# Where a dead letter keeps the original's value-describing headers.
ORIGINAL_RENAMED = {CONTENT_TYPE: "jobscore-original-content-type", SCHEMA: "jobscore-original-schema"}
JSON = b"application/json"

Headers = list[tuple[str, bytes]]

# W3C Trace Context level 1: version 00, 16-byte trace id, 8-byte parent id, flags; all-zero ids invalid.
TRACEPARENT_PATTERN = r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$"
_TRACEPARENT = re.compile(TRACEPARENT_PATTERN.encode())
# Header values as sent: at most this long (tracestate's W3C limit is 512 chars; we allow some room).
MAX_TRACE_HEADER_BYTES = 1024


def header(headers: Iterable[tuple[str, bytes | None]] | None, name: str) -> bytes | None:
    """The last value of header ``name`` (case-insensitive), or None."""
    found = None
    for k, v in headers or ():
        if k.lower() == name:
            found = v
    return found


def trace_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> Headers:
    """The trace context to pass on: a valid ``traceparent`` and, with it, a bounded ``tracestate``."""
    tp = header(headers, TRACEPARENT)
    if tp is None or not _TRACEPARENT.match(tp.strip()):
        return []
    out: Headers = [(TRACEPARENT, tp.strip())]
    ts = header(headers, TRACESTATE)
    if ts is not None and len(ts) <= MAX_TRACE_HEADER_BYTES:
        out.append((TRACESTATE, ts))
    return out


def message_headers(schema_tag: str, trace: Sequence[tuple[str, bytes]] = ()) -> Headers:
    """The headers of a value we produce: content type, schema tag, then the trace context."""
    return [(CONTENT_TYPE, JSON), (SCHEMA, schema_tag.encode()), *trace]


def dead_letter_headers(original: Iterable[tuple[str, bytes | None]] | None, schema_tag: str) -> Headers:
    """A dead letter's headers: the original's (those describing its value renamed), then ours."""
    kept: Headers = []
    for k, v in original or ():
        name = k.lower()
        if name in ORIGINAL_RENAMED:
            kept.append((ORIGINAL_RENAMED[name], v or b""))
        else:
            kept.append((k, v or b""))
    return [*kept, (CONTENT_TYPE, JSON), (SCHEMA, schema_tag.encode())]

"""Dead letters on the wire, in Kafka Connect's convention (``dead_letter.v2``).

A dead letter *is* the record that could not be processed: its value is the original value (cut only past the
dead-letter topic's limit, the cut said in headers), its key the original key, its headers the original headers
plus the reason — so kcat, Kafka UI, Kafka Connect's tooling and any client can show and replay it without
knowing this project. Header names follow Kafka Connect's ``errors.deadletterqueue.context.headers.enable``
(``__connect.errors.*``); what Connect has no name for is under ``jobscore-dlq-*``:

=================================================  ================================================================
header                                             meaning
=================================================  ================================================================
``__connect.errors.topic`` / ``.partition`` /      where the original record was (partition and offset as decimal
``.offset``                                        text)
``__connect.errors.connector.name``                ``jobscore-worker`` or ``jobscore-summarizer`` (the stage)
``__connect.errors.stage``                         ``VALUE_CONVERTER`` (the value broke the topic's contract) or
                                                   ``TASK_PUT`` (valid, but the stage could not process it)
``__connect.errors.exception.class.name``          ``jobscore.<kind>`` (``jobscore.invalid``, ``jobscore.oversized``…)
``__connect.errors.exception.message``             the reason, for people
``jobscore-dlq-version``                           ``2`` (this format)
``jobscore-dlq-kind``                              the kind (``malformed``, ``unknown_schema``, ``invalid``,
                                                   ``oversized``, ``summarize_failed``)
``jobscore-dlq-stage``                             ``worker`` or ``summarizer``
``jobscore-dlq-id``                                ``topic:partition:offset:stage`` — the same on every replay: dedupe
``jobscore-dlq-failed-at``                         unix seconds (decimal text)
``jobscore-dlq-original-size`` / ``-sha256`` /     the whole original value's size and sha256, and ``true`` when the
``-truncated``                                     value (or key) here was cut to fit the topic
=================================================  ================================================================

Readers accept the earlier ``dead_letter.v1`` JSON envelope (original as base64 inside) too, during the migration
window; `read_dead_letter` gives both as the same `DeadLetter` value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Optional, cast, get_args

from schemas.messages import DeadLetter, DeadLetterKind, DeadLetterStage
from schemas.topics import DEAD_LETTERS, SchemaError

CONNECT = "__connect.errors."
TOPIC = CONNECT + "topic"
PARTITION = CONNECT + "partition"
OFFSET = CONNECT + "offset"
CONNECTOR = CONNECT + "connector.name"
STAGE = CONNECT + "stage"
EXCEPTION_CLASS = CONNECT + "exception.class.name"
EXCEPTION_MESSAGE = CONNECT + "exception.message"
VERSION = "jobscore-dlq-version"
KIND = "jobscore-dlq-kind"
OUR_STAGE = "jobscore-dlq-stage"
ID = "jobscore-dlq-id"
FAILED_AT = "jobscore-dlq-failed-at"
ORIGINAL_SIZE = "jobscore-dlq-original-size"
ORIGINAL_SHA256 = "jobscore-dlq-original-sha256"
TRUNCATED = "jobscore-dlq-truncated"

DEAD_LETTER_HEADERS = (
    TOPIC,
    PARTITION,
    OFFSET,
    CONNECTOR,
    STAGE,
    EXCEPTION_CLASS,
    EXCEPTION_MESSAGE,
    VERSION,
    KIND,
    OUR_STAGE,
    ID,
    FAILED_AT,
    ORIGINAL_SIZE,
    ORIGINAL_SHA256,
    TRUNCATED,
)
# The value broke the topic's contract (Connect's converter stage); anything else failed in the task itself.
_CONVERTER_KINDS = ("malformed", "unknown_schema", "invalid", "oversized")

Headers = list[tuple[str, bytes]]


def dead_letter_record(
    dl: DeadLetter, original_headers: Optional[Iterable[tuple[str, Optional[bytes]]]]
) -> tuple[Optional[bytes], bytes, Headers]:
    """(key, value, headers) of ``dl`` on the dead-letter topic: the original key and value, the original
    headers (ours about an earlier dead-lettering dropped) and the dead-letter headers above."""
    kept: Headers = [
        (k, v or b"") for k, v in original_headers or () if k not in DEAD_LETTER_HEADERS and not k.startswith(CONNECT)
    ]
    ours = {
        TOPIC: dl.topic,
        PARTITION: str(dl.partition),
        OFFSET: str(dl.offset),
        CONNECTOR: f"jobscore-{dl.stage}",
        STAGE: "VALUE_CONVERTER" if dl.error_type in _CONVERTER_KINDS else "TASK_PUT",
        EXCEPTION_CLASS: f"jobscore.{dl.error_type}",
        EXCEPTION_MESSAGE: dl.reason,
        VERSION: "2",
        KIND: dl.error_type,
        OUR_STAGE: dl.stage,
        ID: dl.dead_letter_id,
        FAILED_AT: repr(dl.failed_at),
        ORIGINAL_SIZE: str(dl.original_size),
        ORIGINAL_SHA256: dl.original_sha256,
        TRUNCATED: "true" if dl.truncated else "false",
    }
    return dl.key, dl.original, kept + [(k, v.encode()) for k, v in ours.items()]


def _header(headers: Sequence[tuple[str, Optional[bytes]]], name: str) -> Optional[str]:
    for k, v in reversed(list(headers)):
        if k == name and v is not None:
            return v.decode("utf-8", "replace")
    return None


def read_dead_letter(
    key: Optional[bytes], value: Optional[bytes], headers: Optional[Sequence[tuple[str, Optional[bytes]]]]
) -> DeadLetter:
    """A record of the dead-letter topic as a `DeadLetter`, whichever version wrote it: v2 (this module) by its
    headers, v1 by its JSON envelope. Raises `SchemaError` for anything else."""
    hs = list(headers or ())
    if _header(hs, VERSION) != "2":
        return DEAD_LETTERS.decode(value)  # a v1 envelope, or SchemaError
    kind = _header(hs, KIND) or ""
    stage = _header(hs, OUR_STAGE) or ""
    if kind not in get_args(DeadLetterKind) or stage not in get_args(DeadLetterStage):
        raise SchemaError("invalid", f"dead letter v2 with kind {kind!r} and stage {stage!r}")
    try:
        partition, offset = int(_header(hs, PARTITION) or ""), int(_header(hs, OFFSET) or "")
        failed_at = float(_header(hs, FAILED_AT) or 0.0)
        size = int(_header(hs, ORIGINAL_SIZE) or len(value or b""))
    except ValueError as e:
        raise SchemaError("invalid", f"dead letter v2 with a non-numeric header: {e}") from None
    return DeadLetter(
        stage=cast(DeadLetterStage, stage),
        reason=_header(hs, EXCEPTION_MESSAGE) or "",
        error_type=cast(DeadLetterKind, kind),
        topic=_header(hs, TOPIC) or "",
        partition=partition,
        offset=offset,
        key=key,
        original=value or b"",
        failed_at=failed_at,
        original_size=size,
        original_sha256=_header(hs, ORIGINAL_SHA256) or "",
        truncated=_header(hs, TRUNCATED) == "true",
        dead_letter_id=_header(hs, ID) or "",
    )

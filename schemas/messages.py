"""Wire messages for every topic, as versioned msgspec Structs.

Every message carries a ``schema`` tag naming its type and version (``"score_request.v1"``). A
topic's decoder accepts the union of the versions it knows; a tag it does not know is rejected with a
clear reason instead of being guessed at. Evolution follows msgspec's rules: new fields get defaults,
existing fields are never retyped, and a breaking change is a new tagged version (``.v2``) that
decoders accept side by side with ``.v1`` during a rolling deploy.

Wire structs stay lenient about unknown fields (older consumers must read newer producers' messages);
size limits are explicit so one oversized message cannot exhaust a worker.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

import msgspec
from msgspec import Meta, Struct

# Hard wire limits. Deployments may tighten the candidate cap (worker setting `max_candidates`,
# default 1000); these bounds are what any decoder accepts at all.
MAX_ID_CHARS = 128
MAX_QUERY_CHARS = 2_000
MAX_TITLE_CHARS = 512
MAX_DESCRIPTION_CHARS = 100_000
MAX_CANDIDATES_WIRE = 10_000
MAX_TOP_K = MAX_CANDIDATES_WIRE
MAX_REASON_CHARS = 2_000
# A dead letter keeps at most this much of the original value (and of its key): the rest is cut and the
# letter records the cut (``truncated``, ``original_size``, ``original_sha256``), so every dead letter
# fits the dead-letter topic's limit by construction (schemas/topics.py derives that limit from these).
# 2 MiB is over every input topic's max_bytes: an input within its topic's limit is kept whole.
MAX_DEAD_LETTER_ORIGINAL_BYTES = 2 << 20
MAX_DEAD_LETTER_KEY_BYTES = 4_096

Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_CHARS, pattern=r"^[^\s]+$")]
# Kafka's rule for a topic name: 1-249 of [a-zA-Z0-9._-], and not "." or "..". A request naming anything else
# as its reply topic is dead-lettered `invalid` at `$.reply_topic` (no answer could ever be written there).
TOPIC_NAME_PATTERN = r"^(?!\.{1,2}$)[a-zA-Z0-9._-]{1,249}$"
Topic = Annotated[str, Meta(min_length=1, max_length=249, pattern=TOPIC_NAME_PATTERN)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Millis = Annotated[float, Meta(ge=0.0)]
EpochSeconds = Annotated[float, Meta(ge=0.0)]
# Closed sets, named once: the JSON Schemas (schemas/contract/) list the same values as enums.
RankingStatus = Literal["ok", "timeout", "rejected"]
DeadLetterStage = Literal["summarizer", "worker"]
SummaryMode = Literal["extractive", "abstractive", "hybrid"]
# Why a record was dead-lettered: the four ways bytes fail a topic's contract (schemas.topics.SchemaError), and
# a posting the summarizer could not summarize. A new kind comes with a new dead-letter version.
DecodeErrorKind = Literal["malformed", "unknown_schema", "invalid", "oversized"]
DeadLetterKind = Literal["malformed", "unknown_schema", "invalid", "oversized", "summarize_failed"]


class Message(Struct, tag_field="schema", frozen=True, kw_only=True, omit_defaults=True):
    """Base of every wire message: the ``schema`` field is the type+version tag."""


# --- postings topic -------------------------------------------------------------------------------


class JobPosted(Message, tag="job_posted.v1", frozen=True):
    """A job posting was created or updated (or, with ``deleted``, withdrawn: a tombstone)."""

    job_id: Id
    title: Annotated[str, Meta(max_length=MAX_TITLE_CHARS)] = ""
    company: Annotated[str, Meta(max_length=MAX_TITLE_CHARS)] = ""
    location: Annotated[str, Meta(max_length=MAX_TITLE_CHARS)] = ""
    description: Annotated[str, Meta(max_length=MAX_DESCRIPTION_CHARS)] = ""
    posted_at: EpochSeconds = 0.0
    deleted: bool = False


_POSTING_ROW = msgspec.json.Decoder(JobPosted)


def posting_from_row(row: dict[str, object]) -> JobPosted:
    """A `JobPosted` from a file row (JSONL/Parquet) that may omit the ``schema`` tag: a file of postings
    implies it. Raises `msgspec.ValidationError` naming the bad field."""
    tag = JobPosted.__struct_config__.tag
    return _POSTING_ROW.decode(msgspec.json.encode({**row, "schema": row.get("schema", tag)}))


# --- summaries topic (readiness) ------------------------------------------------------------------


class JobSummarized(Message, tag="job_summarized.v1", frozen=True):
    """A posting's summary is stored: from now on requests naming ``job_id`` are scored on it (or, with
    ``deleted``, a withdrawn posting's summary was removed).

    Published by the summarizer on the summaries topic (compacted, keyed by job id) after the summary is
    written and before the posting's offset is committed, also for a re-posted posting whose content had
    been summarized already, so a client can wait for the version it published: ``content_hash`` is
    `schemas.summary.content_hash` of that posting (title, company, location, description). At least once:
    an event may repeat; the latest per job id is the state."""

    job_id: Id
    content_hash: Annotated[str, Meta(max_length=128)] = ""
    summarizer_version: Annotated[str, Meta(max_length=MAX_ID_CHARS)] = ""
    mode: Optional[SummaryMode] = None  # none on a withdrawn posting's event
    summarized_at: EpochSeconds = 0.0
    deleted: bool = False


# --- scoring requests topic -----------------------------------------------------------------------


class ScoreRequest(Message, tag="score_request.v1", frozen=True):
    """Score ``candidates`` (job ids) against ``query``; answer with a `Ranking` of the best ``top_k``."""

    request_id: Id
    query: Annotated[str, Meta(min_length=1, max_length=MAX_QUERY_CHARS)]
    candidates: Annotated[list[Id], Meta(min_length=1, max_length=MAX_CANDIDATES_WIRE)]
    top_k: Annotated[int, Meta(ge=1, le=MAX_TOP_K)] = 10
    # Absolute deadline (unix seconds). Past it the request is answered with status "timeout".
    deadline: Optional[EpochSeconds] = None
    # Where to publish the ranking; default is the deployment's rankings topic.
    reply_topic: Optional[Topic] = None
    created_at: EpochSeconds = 0.0


# --- rankings topic --------------------------------------------------------------------------------


class ScoredJob(Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """One ranked candidate: ``[job_id, score]`` on the wire (compact for 1000-candidate rankings).

    Exactly two items: a tuple cannot grow like an object (a third item would be a new ranking version)."""

    job_id: str
    score: Probability


class CandidateError(Struct, frozen=True, kw_only=True):
    job_id: str
    reason: Literal["missing_summary", "invalid_summary", "oversized", "engine_error"]
    detail: str = ""


class Timings(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Milliseconds spent per stage of the worker's data path for this request."""

    queue_ms: Millis = 0.0
    fetch_ms: Millis = 0.0
    score_ms: Millis = 0.0
    total_ms: Millis = 0.0


class Ranking(Message, tag="ranking.v1", frozen=True):
    """The answer to a `ScoreRequest`, keyed by ``request_id``.

    Delivery is at-least-once: a consumer may see the same ``request_id`` twice (after a worker crash
    or rebalance) and must deduplicate by it; duplicates carry the same ranking.
    """

    request_id: Id
    status: RankingStatus = "ok"
    results: list[ScoredJob] = msgspec.field(default_factory=list)
    errors: list[CandidateError] = msgspec.field(default_factory=list)
    candidates_total: int = 0
    model_id: str = ""
    model_revision: str = ""
    summarizer_version: str = ""
    timings: Timings = msgspec.field(default_factory=Timings)
    detail: str = ""
    produced_at: EpochSeconds = 0.0
    # Candidates scored on their raw description (cut to a token budget) because no summary existed.
    raw_fallback: list[str] = msgspec.field(default_factory=list)


# --- dead letters ---------------------------------------------------------------------------------


class DeadLetter(Message, tag="dead_letter.v1", frozen=True):
    """A message a stage could not process, with the reason.

    The original bytes are kept verbatim up to ``MAX_DEAD_LETTER_ORIGINAL_BYTES`` (a deployment may set a
    smaller budget); a longer value is cut to that prefix with ``truncated`` set, and ``original_size`` /
    ``original_sha256`` describe the whole value. ``dead_letter_id`` is the same on every replay of the same
    source record (``topic:partition:offset:stage``): consumers of the dead-letter topic dedupe by it.
    """

    stage: DeadLetterStage
    reason: Annotated[str, Meta(max_length=MAX_REASON_CHARS)]
    error_type: DeadLetterKind
    topic: str
    partition: int
    offset: int
    key: Optional[bytes] = None
    original: bytes = b""
    failed_at: EpochSeconds = 0.0
    # Added with the size cap (still v1: new fields have defaults, old readers skip them).
    original_size: int = 0
    original_sha256: str = ""
    truncated: bool = False
    dead_letter_id: str = ""

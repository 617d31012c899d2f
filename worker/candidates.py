"""Candidate resolution, a pure step of the worker's intake: which text each candidate is scored on.

Given a request's candidates and what the summary cache returned for them, decide per candidate: its
summary (the normal case), its raw description cut shorter (``missing_summary="raw"`` and an entry that
carries it), or an error listed in the ranking (missing, undecodable or oversized summary). No Redis,
no tokenizer: the loop fetches, this decides, the prompt builder tokenizes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from jobscore.cache import InvalidSummary
from schemas import CandidateError
from schemas.summary import SummaryRecord

Found = Mapping[str, SummaryRecord | InvalidSummary | None]


@dataclass(frozen=True, slots=True)
class Candidate:
    job_id: str
    cache_key: str  # the prompt builder caches token ids by (job id, this): changes when the text does
    text: str
    max_tokens: int | None  # None: the builder's own document cap
    raw_fallback: bool = False


@dataclass
class Resolution:
    candidates: list[Candidate] = field(default_factory=list)
    errors: list[CandidateError] = field(default_factory=list)


def needs_raw(found: Found) -> list[str]:
    """Candidates without a usable summary: the only ones a raw-description fallback is looked up for."""
    return [j for j, r in found.items() if not isinstance(r, SummaryRecord) or not r.summary]


def raw_entries(job_ids: Sequence[str], records: Sequence[object]) -> dict[str, SummaryRecord]:
    """The entries among ``records`` (aligned with ``job_ids``) that carry a raw description."""
    return {j: r for j, r in zip(job_ids, records, strict=True) if isinstance(r, SummaryRecord) and r.raw}


def resolve(
    job_ids: Sequence[str],
    found: Found,
    raws: Mapping[str, SummaryRecord],
    *,
    summarizer_version: str,
    max_summary_chars: int,
    raw_fallback_tokens: int,
) -> Resolution:
    out = Resolution()
    for job_id in dict.fromkeys(job_ids):  # a candidate named twice is scored once
        rec = found[job_id]
        fallback = raws.get(job_id)
        if fallback is not None:
            out.candidates.append(
                Candidate(job_id, f"raw:{fallback.content_hash}", fallback.raw or "", raw_fallback_tokens, True)
            )
        elif rec is None or (isinstance(rec, SummaryRecord) and not rec.summary):
            detail = f"no summary for version {summarizer_version}"
            out.errors.append(CandidateError(job_id=job_id, reason="missing_summary", detail=detail))
        elif isinstance(rec, InvalidSummary):
            out.errors.append(CandidateError(job_id=job_id, reason="invalid_summary", detail=str(rec)))
        elif len(rec.summary) > max_summary_chars:
            detail = f"summary of {len(rec.summary)} chars > {max_summary_chars}"
            out.errors.append(CandidateError(job_id=job_id, reason="oversized", detail=detail))
        else:
            out.candidates.append(Candidate(job_id, rec.content_hash, rec.summary, None))
    return out

"""Ranking as a pure function: no Kafka, no Redis, no engine."""

from __future__ import annotations

from collections.abc import Sequence

from schemas import CandidateError, Ranking, ScoredJob, Timings


def rank(
    request_id: str,
    job_ids: Sequence[str],
    scores: Sequence[float],
    top_k: int,
    *,
    errors: Sequence[CandidateError] = (),
    candidates_total: int,
    model_id: str,
    model_revision: str,
    summarizer_version: str,
    timings: Timings,
    produced_at: float,
    raw_fallback: Sequence[str] = (),
) -> Ranking:
    """Sort scored candidates by score (descending; ties by job id for determinism) and keep ``top_k``."""
    assert len(job_ids) == len(scores), "one score per scored candidate"
    order = sorted(range(len(job_ids)), key=lambda i: (-scores[i], job_ids[i]))[:top_k]
    return Ranking(
        request_id=request_id,
        status="ok",
        results=[ScoredJob(job_ids[i], min(1.0, max(0.0, float(scores[i])))) for i in order],
        errors=list(errors),
        candidates_total=candidates_total,
        model_id=model_id,
        model_revision=model_revision,
        summarizer_version=summarizer_version,
        timings=timings,
        produced_at=produced_at,
        raw_fallback=list(raw_fallback),
    )

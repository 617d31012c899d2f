"""Ranking as pure functions: no Kafka, no Redis, no engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas import CandidateError, Ranking, ScoredJob, ScoreRequest, Timings
from schemas.messages import RankingStatus


@dataclass(frozen=True)
class Provenance:
    """What every ranking says about how it was made."""

    model_id: str
    model_revision: str
    summarizer_version: str


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


def ranking_of_scores(
    req: ScoreRequest,
    job_ids: Sequence[str],
    scores: Sequence[float | None],
    *,
    errors: Sequence[CandidateError],
    raw_fallback: Sequence[str],
    candidates_total: int,
    timings: Timings,
    produced_at: float,
    made_by: Provenance,
) -> Ranking:
    """The answer to a scored request: candidates the engine rejected (score None) become errors."""
    ids, vals = [], []
    errs = list(errors)
    for job_id, sc in zip(job_ids, scores, strict=True):
        if sc is None:
            errs.append(CandidateError(job_id=job_id, reason="engine_error", detail="the engine rejected this prompt"))
        else:
            ids.append(job_id)
            vals.append(sc)
    scored = set(ids)
    return rank(
        req.request_id,
        ids,
        vals,
        req.top_k,
        errors=errs,
        candidates_total=candidates_total,
        model_id=made_by.model_id,
        model_revision=made_by.model_revision,
        summarizer_version=made_by.summarizer_version,
        timings=timings,
        produced_at=produced_at,
        raw_fallback=[j for j in raw_fallback if j in scored],
    )


def bare_ranking(req: ScoreRequest, status: RankingStatus, detail: str, now: float, made_by: Provenance) -> Ranking:
    """An answer without scores: rejected or timed out."""
    return Ranking(
        request_id=req.request_id,
        status=status,
        detail=detail,
        candidates_total=len(req.candidates),
        model_id=made_by.model_id,
        model_revision=made_by.model_revision,
        summarizer_version=made_by.summarizer_version,
        produced_at=now,
    )

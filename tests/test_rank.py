"""Ranking and candidate resolution as pure functions (worker/rank.py, worker/candidates.py)."""

from __future__ import annotations

import random

import pytest

from jobscore.cache import InvalidSummary
from schemas import CandidateError, ScoreRequest, Timings
from schemas.summary import SummaryRecord
from worker.candidates import needs_raw, raw_entries, resolve
from worker.rank import Provenance, bare_ranking, rank, ranking_of_scores

MADE_BY = Provenance("m", "rev", "v1")
TIMINGS = Timings(queue_ms=1.0, fetch_ms=2.0, score_ms=3.0, total_ms=6.0)


def _rank(job_ids: list[str], scores: list[float], top_k: int) -> list[tuple[str, float]]:
    r = rank(
        "r",
        job_ids,
        scores,
        top_k,
        candidates_total=len(job_ids),
        model_id="m",
        model_revision="rev",
        summarizer_version="v1",
        timings=TIMINGS,
        produced_at=1.0,
    )
    return [(s.job_id, s.score) for s in r.results]


def _record(job_id: str, summary: str = "Title: T", content_hash: str = "h1", raw: str | None = None) -> SummaryRecord:
    return SummaryRecord(
        job_id=job_id,
        version="v1",
        mode="extractive",
        summary=summary,
        content_hash=content_hash,
        raw_tokens=10,
        summary_tokens=3,
        created_at=1.0,
        title="T",
        raw=raw,
    )


class TestRank:
    def test_rank_keeps_true_top_k_with_their_own_scores(self) -> None:
        rng = random.Random(3)
        ids = [f"j{i}" for i in range(50)]
        scores = [rng.random() for _ in ids]
        got = _rank(ids, scores, 7)
        want = sorted(zip(ids, scores, strict=True), key=lambda x: -x[1])[:7]
        assert got == want  # the k best, best first, each with the score it was given

    def test_rank_breaks_ties_by_job_id_and_caps_at_available(self) -> None:
        assert _rank(["b", "a", "c"], [0.5, 0.5, 0.9], 10) == [("c", 0.9), ("a", 0.5), ("b", 0.5)]

    def test_rank_with_top_k_one_returns_the_maximum(self) -> None:
        assert _rank(["x", "y", "z"], [0.2, 0.8, 0.4], 1) == [("y", 0.8)]

    def test_rank_refuses_misaligned_scores(self) -> None:
        with pytest.raises(AssertionError):
            _rank(["x", "y"], [0.1], 1)

    def test_ranking_of_scores_turns_engine_rejections_into_errors(self) -> None:
        req = ScoreRequest(request_id="r", query="q", candidates=["a", "b", "c", "d"], top_k=2)
        prior = [CandidateError(job_id="d", reason="missing_summary", detail="x")]
        r = ranking_of_scores(
            req,
            ["a", "b", "c"],
            [0.3, None, 0.7],
            errors=prior,
            raw_fallback=["b", "c"],
            candidates_total=4,
            timings=TIMINGS,
            produced_at=5.0,
            made_by=MADE_BY,
        )
        assert r.status == "ok" and r.request_id == "r"
        assert [(s.job_id, s.score) for s in r.results] == [("c", 0.7), ("a", 0.3)]
        assert [(e.job_id, e.reason) for e in r.errors] == [("d", "missing_summary"), ("b", "engine_error")]
        assert r.raw_fallback == ["c"]  # b was not scored: it is an error, not a fallback
        assert (r.model_id, r.model_revision, r.summarizer_version) == ("m", "rev", "v1")
        assert r.candidates_total == 4 and r.timings == TIMINGS and r.produced_at == 5.0

    def test_bare_ranking_has_status_detail_and_no_scores(self) -> None:
        req = ScoreRequest(request_id="r", query="q", candidates=["a", "b", "a"], top_k=2)
        r = bare_ranking(req, "timeout", "deadline passed", 9.0, MADE_BY)
        assert (r.status, r.detail, r.results, r.candidates_total) == ("timeout", "deadline passed", [], 3)
        assert (r.model_id, r.summarizer_version, r.produced_at) == ("m", "v1", 9.0)


class TestResolve:
    def test_resolve_decides_text_or_error_per_candidate(self) -> None:
        found = {
            "ok": _record("ok", "Title: Nurse", "hash-ok"),
            "gone": None,
            "empty": _record("empty", ""),
            "bad": InvalidSummary("undecodable cache entry"),
            "long": _record("long", "x" * 50),
            "rawonly": None,
        }
        raws = {"rawonly": _record("rawonly", "", "hash-raw", raw="the raw description")}
        res = resolve(
            ["ok", "gone", "ok", "empty", "bad", "long", "rawonly"],
            found,
            raws,
            summarizer_version="v1",
            max_summary_chars=20,
            raw_fallback_tokens=48,
        )
        cands = [(c.job_id, c.cache_key, c.text, c.max_tokens, c.raw_fallback) for c in res.candidates]
        assert cands == [
            ("ok", "hash-ok", "Title: Nurse", None, False),  # named twice, scored once
            ("rawonly", "raw:hash-raw", "the raw description", 48, True),
        ]
        assert [(e.job_id, e.reason) for e in res.errors] == [
            ("gone", "missing_summary"),
            ("empty", "missing_summary"),
            ("bad", "invalid_summary"),
            ("long", "oversized"),
        ]
        assert "v1" in res.errors[0].detail

    def test_resolve_cache_key_follows_content_hash(self) -> None:
        # The prompt builder caches a candidate's token ids by (job id, cache key): a changed posting must
        # get a new key, or the old text's ids would be scored.
        kw = {"summarizer_version": "v1", "max_summary_chars": 100, "raw_fallback_tokens": 8}
        old = resolve(["j"], {"j": _record("j", "Title: A", "h-old")}, {}, **kw).candidates[0]
        new = resolve(["j"], {"j": _record("j", "Title: B", "h-new")}, {}, **kw).candidates[0]
        assert old.cache_key != new.cache_key and new.text == "Title: B"

    def test_needs_raw_and_raw_entries(self) -> None:
        found = {"a": _record("a"), "b": None, "c": _record("c", ""), "d": InvalidSummary("x")}
        assert needs_raw(found) == ["b", "c", "d"]
        recs = [_record("b", "", raw="text"), None, _record("d", "", raw=None)]
        assert list(raw_entries(["b", "c", "d"], recs)) == ["b"]

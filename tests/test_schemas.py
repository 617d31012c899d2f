from __future__ import annotations

import json

import msgspec
import pytest

from schemas import (
    DEAD_LETTERS,
    POSTINGS,
    RANKINGS,
    SCORE_REQUESTS,
    CandidateError,
    DeadLetter,
    JobPosted,
    Ranking,
    SchemaError,
    ScoredJob,
    ScoreRequest,
    Timings,
)
from schemas.messages import MAX_CANDIDATES_WIRE, MAX_DESCRIPTION_CHARS


class TestRoundTrip:
    def test_every_message_round_trips(self) -> None:
        msgs = [
            (POSTINGS, JobPosted(job_id="j1", title="Data Scientist", description="Python and SQL.", posted_at=1.0)),
            (SCORE_REQUESTS, ScoreRequest(request_id="r1", query="python", candidates=["j1", "j2"], top_k=1)),
            (
                RANKINGS,
                Ranking(
                    request_id="r1",
                    results=[ScoredJob("j1", 0.9)],
                    errors=[CandidateError(job_id="j2", reason="missing_summary")],
                    candidates_total=2,
                    timings=Timings(score_ms=3.5),
                ),
            ),
            (
                DEAD_LETTERS,
                DeadLetter(
                    stage="worker",
                    reason="bad",
                    error_type="malformed",
                    topic="t",
                    partition=0,
                    offset=3,
                    original=b"\x00\xff",
                ),
            ),
        ]
        for spec, msg in msgs:
            assert spec.decode(spec.encode(msg)) == msg

    def test_encoded_message_carries_its_version_tag(self) -> None:
        doc = json.loads(SCORE_REQUESTS.encode(ScoreRequest(request_id="r", query="q", candidates=["a"])))
        assert doc["schema"] == "score_request.v1"

    def test_ranking_results_are_compact_pairs(self) -> None:
        doc = json.loads(RANKINGS.encode(Ranking(request_id="r", results=[ScoredJob("j", 0.5)])))
        assert doc["results"] == [["j", 0.5]]

    def test_unknown_fields_are_ignored_for_forward_compatibility(self) -> None:
        raw = b'{"schema":"score_request.v1","request_id":"r","query":"q","candidates":["a"],"new_field":1}'
        assert SCORE_REQUESTS.decode(raw).request_id == "r"


class TestRejection:
    def test_decode_malformed_json_reports_malformed(self) -> None:
        with pytest.raises(SchemaError) as e:
            SCORE_REQUESTS.decode(b'{"schema": "score_request.v1", "query": ')
        assert e.value.kind == "malformed"
        assert "not valid JSON" in e.value.reason

    def test_decode_unknown_version_names_accepted_versions(self) -> None:
        with pytest.raises(SchemaError) as e:
            SCORE_REQUESTS.decode(b'{"schema":"score_request.v9","request_id":"r","query":"q","candidates":["a"]}')
        assert e.value.kind == "unknown_schema"
        assert "score_request.v1" in e.value.reason

    def test_decode_missing_tag_is_unknown_schema(self) -> None:
        with pytest.raises(SchemaError) as e:
            SCORE_REQUESTS.decode(b'{"request_id":"r","query":"q","candidates":["a"]}')
        assert e.value.kind == "unknown_schema"

    def test_decode_other_topics_message_is_unknown_schema(self) -> None:
        with pytest.raises(SchemaError) as e:
            SCORE_REQUESTS.decode(POSTINGS.encode(JobPosted(job_id="j")))
        assert e.value.kind == "unknown_schema"

    def test_decode_too_many_candidates_is_oversized(self) -> None:
        req = {
            "schema": "score_request.v1",
            "request_id": "r",
            "query": "q",
            "candidates": [f"j{i}" for i in range(MAX_CANDIDATES_WIRE + 1)],
        }
        with pytest.raises(SchemaError) as e:
            SCORE_REQUESTS.decode(json.dumps(req).encode())
        assert e.value.kind == "oversized"
        assert "$.candidates" in e.value.reason

    def test_decode_description_too_long_is_oversized(self) -> None:
        posting = {"schema": "job_posted.v1", "job_id": "j", "description": "x" * (MAX_DESCRIPTION_CHARS + 1)}
        with pytest.raises(SchemaError) as e:
            POSTINGS.decode(json.dumps(posting).encode())
        assert e.value.kind == "oversized"

    def test_decode_bytes_over_topic_limit_is_rejected_before_parsing(self) -> None:
        with pytest.raises(SchemaError) as e:
            POSTINGS.decode(b"x" * (POSTINGS.max_bytes + 1))
        assert e.value.kind == "oversized"
        assert "bytes" in e.value.reason

    @pytest.mark.parametrize(
        ("patch", "path"),
        [
            ({"query": ""}, "$.query"),
            ({"top_k": 0}, "$.top_k"),
            ({"candidates": []}, "$.candidates"),
            ({"candidates": ["has space"]}, "$.candidates[0]"),
            ({"request_id": 5}, "$.request_id"),
            ({"deadline": -1}, "$.deadline"),
        ],
    )
    def test_decode_invalid_field_names_the_field(self, patch: dict, path: str) -> None:
        req = {"schema": "score_request.v1", "request_id": "r", "query": "q", "candidates": ["a"], **patch}
        with pytest.raises(SchemaError) as e:
            SCORE_REQUESTS.decode(json.dumps(req).encode())
        assert e.value.kind in {"invalid", "oversized"}
        assert path in e.value.reason

    def test_decode_null_value_is_malformed(self) -> None:
        with pytest.raises(SchemaError) as e:
            SCORE_REQUESTS.decode(None)
        assert e.value.kind == "malformed"

    def test_scores_outside_unit_interval_are_invalid(self) -> None:
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(b'{"schema":"ranking.v1","request_id":"r","results":[["j",1.5]]}', type=Ranking)

from __future__ import annotations

import contextlib
import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    TopicSpec,
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
        # docs/operating.md "Bad input": an invalid field is `invalid`, naming the field
        assert e.value.kind == "invalid"
        assert path in e.value.reason

    def test_decode_null_value_is_malformed(self) -> None:
        with pytest.raises(SchemaError) as e:
            SCORE_REQUESTS.decode(None)
        assert e.value.kind == "malformed"

    def test_scores_outside_unit_interval_are_invalid(self) -> None:
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(b'{"schema":"ranking.v1","request_id":"r","results":[["j",1.5]]}', type=Ranking)


class TestAnyBytes:
    """Issue 18 finding 1: a decode path that raises anything but `SchemaError` is a poison pill (the
    record is never dead-lettered, never committed, and kills every restart)."""

    @pytest.mark.parametrize(
        ("spec", "field"),
        [(POSTINGS, "title"), (SCORE_REQUESTS, "query"), (RANKINGS, "detail"), (DEAD_LETTERS, "reason")],
        ids=lambda v: getattr(v, "role", v),
    )
    def test_invalid_utf8_inside_a_string_is_malformed(self, spec: TopicSpec, field: str) -> None:  # type: ignore[type-arg]
        # the reproduction: a query "caf\xc3\x28" (0xc3 starts a 2-byte sequence; 0x28 cannot continue it)
        data = b'{"schema": "' + spec.tags[0].encode() + b'", "' + field.encode() + b'": "caf\xc3\x28"}'
        with pytest.raises(SchemaError) as e:
            spec.decode(data)
        assert e.value.kind == "malformed" and "UTF-8" in e.value.reason

    @given(st.binary(max_size=512))
    @settings(max_examples=400, deadline=None)
    def test_random_bytes_decode_or_raise_schema_error(self, data: bytes) -> None:
        for spec in (POSTINGS, SCORE_REQUESTS, RANKINGS, DEAD_LETTERS):
            with contextlib.suppress(SchemaError):  # anything else fails the test
                spec.decode(data)

    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda children: (
                st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
            ),
            max_leaves=20,
        ),
        st.sampled_from(["score_request.v1", "job_posted.v1", "ranking.v1", "score_request.v9", None]),
    )
    @settings(max_examples=400, deadline=None)
    def test_random_json_decodes_or_raises_schema_error(self, value: object, tag: str | None) -> None:
        if isinstance(value, dict) and tag is not None:
            value = {**value, "schema": tag}
        data = json.dumps(value).encode()
        for spec in (POSTINGS, SCORE_REQUESTS, RANKINGS):
            try:
                spec.decode(data)
            except SchemaError as e:
                assert e.kind in ("malformed", "unknown_schema", "invalid", "oversized")

    def test_schema_word_inside_a_field_does_not_stand_in_for_the_tag(self) -> None:
        data = json.dumps({"request_id": "r", "query": 'the "schema" field', "candidates": ["a"]}).encode()
        with pytest.raises(SchemaError) as e:
            SCORE_REQUESTS.decode(data)
        assert e.value.kind == "unknown_schema"


def test_dead_letters_in_connects_convention_read_back_and_v1_still_read() -> None:
    """dead_letter.v2 (schemas/deadletters.py): the original key/value/headers plus `__connect.errors.*` reads back
    as the same `DeadLetter`; a v1 envelope (the migration window) reads too; anything else is a SchemaError."""
    from schemas import DEAD_LETTERS, DeadLetter, SchemaError
    from schemas.deadletters import dead_letter_record, read_dead_letter

    dl = DeadLetter(
        stage="worker", reason="bad", error_type="invalid", topic="t", partition=2, offset=7, key=b"k",
        original=b'{"x": 1}', failed_at=1.5, original_size=8, original_sha256="ab", truncated=False,
        dead_letter_id="t:2:7:worker",
    )  # fmt: skip
    key, value, headers = dead_letter_record(dl, [("traceparent", b"00-x"), ("__connect.errors.topic", b"old")])
    assert (key, value) == (b"k", b'{"x": 1}')
    names = [k for k, _ in headers]
    assert names.count("__connect.errors.topic") == 1 and ("traceparent", b"00-x") in headers
    assert read_dead_letter(key, value, headers) == dl
    assert read_dead_letter(b"k", DEAD_LETTERS.encode(dl), []) == dl  # v1
    with pytest.raises(SchemaError):
        read_dead_letter(None, b"not a dead letter", [])

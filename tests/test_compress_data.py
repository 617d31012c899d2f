"""compress: ESCO relevance data, the reserved-occupation filter, JSONL loading and the ranking metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from compress.data import (
    RESERVED_FILE,
    Pair,
    drop_reserved,
    generate_split,
    load_occupations,
    load_pairs,
    occupation_of,
    reserved_ids,
    write_jsonl,
)
from compress.metrics import auc, evaluate_scores, ndcg_at_k, reciprocal_rank


class TestReservedFilter:
    def test_load_occupations_train_excludes_every_reserved_occupation(self) -> None:
        reserved = reserved_ids()
        assert len(reserved) == len(RESERVED_FILE.read_text().split()) > 100
        train = load_occupations("train")
        heldout = load_occupations("heldout")
        every = load_occupations("all")
        assert not {o.id for o in train} & reserved
        assert {o.id for o in heldout} <= reserved
        # Every reserved id that ESCO has lands in the held-out split, and the two splits partition the data.
        assert {o.id for o in heldout} == {o.id for o in every} & reserved
        assert len(train) + len(heldout) == len(every)

    def test_repo_copy_matches_shared_list_when_present(self) -> None:
        shared = Path("/work/shared/data/esco_reserved_occupations.txt")
        if not shared.exists():
            pytest.skip("the shared list exists only on the team machine; the repo copy is authoritative")
        assert set(shared.read_text().split()) == reserved_ids()

    def test_generate_train_split_never_touches_reserved_jobs(self) -> None:
        postings, pairs = generate_split("train", 300, seed=3)
        reserved = reserved_ids()
        assert not {occupation_of(j) for j in postings} & reserved
        assert drop_reserved(pairs) == pairs

    def test_drop_reserved_removes_held_out_pairs(self) -> None:
        _, held = generate_split("heldout", 20, seed=1)
        assert held and all(occupation_of(p.job_id) in reserved_ids() for p in held)
        assert drop_reserved(held) == []


class TestGenerator:
    def test_generate_queries_have_graded_positives_and_hard_negatives(self) -> None:
        postings, pairs = generate_split("train", 200, seed=0)
        by_q: dict[str, list[Pair]] = {}
        for p in pairs:
            by_q.setdefault(p.qid, []).append(p)
        assert len(by_q) == 200
        assert {p.label for p in pairs} == {0, 1, 2}
        hard = 0
        for ps in by_q.values():
            assert any(p.label > 0 for p in ps) and any(p.label == 0 for p in ps)
            pos_occ = {occupation_of(p.job_id) for p in ps if p.label > 0}
            assert len(pos_occ) == 1  # the query's own occupation only
            qwords = {w for w in ps[0].query.lower().split() if len(w) > 3}
            for p in ps:
                if p.label == 0 and qwords & set(postings[p.job_id].title.lower().split()):
                    hard += 1
        assert hard > 50, "hard negatives (sharing a title word with the query) should be common"

    def test_generate_is_deterministic_per_seed(self) -> None:
        assert generate_split("train", 30, seed=5)[1] == generate_split("train", 30, seed=5)[1]
        assert generate_split("train", 30, seed=5)[1] != generate_split("train", 30, seed=6)[1]

    def test_occupation_text_is_split_into_title_and_description(self) -> None:
        occ = next(o for o in load_occupations("all") if o.titles.startswith("technical director"))
        assert occ.preferred == "technical director"
        assert occ.description.startswith("Technical directors realise")


class TestJsonl:
    def test_write_then_load_round_trips_pairs_and_postings(self, tmp_path: Path) -> None:
        postings, pairs = generate_split("heldout", 10, seed=2)
        path = tmp_path / "held.jsonl"
        write_jsonl(path, postings, pairs)
        got_postings, got_pairs = load_pairs(path)
        assert got_pairs == pairs
        assert {p.job_id for p in pairs} <= set(got_postings)
        assert got_postings[pairs[0].job_id] == postings[pairs[0].job_id]

    def test_load_pairs_accepts_inline_job_text_and_default_qid(self, tmp_path: Path) -> None:
        path = tmp_path / "inline.jsonl"
        rows = [
            {"query": "nurse", "job": "Nurses care for patients.", "label": 1},
            {"query": "nurse", "job": "x", "label": 0},
        ]
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        postings, pairs = load_pairs(path)
        assert [p.label for p in pairs] == [1, 0]
        assert pairs[0].qid == "nurse"
        assert postings[pairs[0].job_id].description == "Nurses care for patients."

    def test_load_pairs_rejects_unknown_job_id_with_line_number(self, tmp_path: Path) -> None:
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps({"query": "q", "job_id": "nope", "label": 1}) + "\n")
        with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
            load_pairs(path)


class TestMetrics:
    def test_metrics_match_hand_computed_values(self) -> None:
        # Query a: ranking by score is [0 (label 0), 1 (label 2), 2 (label 1)].
        # Query b: ranking is [3 (label 1), 4 (label 0)].
        pairs = [
            Pair("a", "q", "j0", 0),
            Pair("a", "q", "j1", 2),
            Pair("a", "q", "j2", 1),
            Pair("b", "r", "j3", 1),
            Pair("b", "r", "j4", 0),
        ]
        scores = [0.9, 0.8, 0.1, 0.7, 0.7]
        m = evaluate_scores(pairs, scores, k=10)
        # AUC: positives {0.8, 0.1, 0.7}, negatives {0.9, 0.7}: wins 0.8>0.7, 0.7=0.7 (half) → 1.5 of 6.
        assert m["auc"] == pytest.approx(1.5 / 6)
        # NDCG query a: DCG = 0 + 3/log2(3) + 1/log2(4); IDCG = 3 + 1/log2(3).
        ndcg_a = (3 / math.log2(3) + 1 / 2) / (3 + 1 / math.log2(3))
        # Query b: the tie keeps input order, so the relevant job is first: NDCG 1, RR 1.
        assert m["ndcg@10"] == pytest.approx((ndcg_a + 1.0) / 2)
        assert m["mrr"] == pytest.approx((1 / 2 + 1) / 2)
        assert m["queries"] == 2

    def test_auc_perfect_and_reversed(self) -> None:
        assert auc([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == 1.0
        assert auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
        with pytest.raises(ValueError):
            auc([1, 1], [0.5, 0.6])

    def test_ndcg_cutoff_and_reciprocal_rank(self) -> None:
        labels = [0] * 10 + [1]
        scores = [1.0 - i / 100 for i in range(11)]  # the relevant job ranks 11th
        assert ndcg_at_k(labels, scores, k=10) == 0.0
        assert reciprocal_rank(labels, scores) == pytest.approx(1 / 11)

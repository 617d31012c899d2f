"""The hard evaluation split and the format-varied training data: reserved occupations stay on their side,
candidates carry no title, queries are not the preferred title, and BM25 behaves."""

from __future__ import annotations

from collections import defaultdict

from compress.data import (
    drop_reserved,
    drop_titles,
    generate_hard_split,
    generate_split,
    load_occupations,
    occupation_of,
    reserved_ids,
)
from compress.evaluate import bm25_scores, evaluate_baselines


def test_hard_split_shape_and_reserved_only() -> None:
    postings, pairs = generate_hard_split("heldout", 12, seed=3)
    by_q: dict[str, list[int]] = defaultdict(list)
    for p in pairs:
        by_q[p.qid].append(p.label)
    assert len(by_q) == 12
    assert all(len(ls) == 20 and sorted(ls)[-1] == 2 and sum(ls) == 2 for ls in by_q.values())
    assert {occupation_of(p.job_id) for p in pairs} <= reserved_ids()
    assert all(not jp.title and not jp.company and not jp.location for jp in postings.values())
    pref = {o.id: o.preferred.lower() for o in load_occupations("heldout")}
    for p in pairs:
        if p.label:
            assert p.query.lower() not in pref[occupation_of(p.job_id)]


def test_training_variants_hold_no_reserved_occupation() -> None:
    postings, pairs = generate_split("train", 10, seed=1)
    varied = drop_titles(postings, pairs, 0.5, seed=1)
    assert any(p.job_id.endswith(".nt") for p in varied)
    assert all(not postings[p.job_id].title for p in varied if p.job_id.endswith(".nt"))
    _, hard = generate_hard_split("train", 5, seed=1, candidates=6, title_negatives=2, similar_negatives=2)
    assert drop_reserved([*varied, *hard]) == [*varied, *hard]
    # The filter sees through the variant suffixes.
    rid = next(iter(reserved_ids()))
    assert occupation_of(f"{rid}.0.nt") == rid and occupation_of(f"{rid}.d") == rid


def test_bm25_prefers_the_matching_document() -> None:
    docs = ["Bakers make bread and pastries.", "Electricians install wiring.", "Pilots fly aircraft."]
    s = bm25_scores(["baker bread"] * 3, docs, docs)
    assert s[0] > 0 and s[1] == s[2] == 0


def test_baselines_run_on_the_hard_split() -> None:
    postings, pairs = generate_hard_split("heldout", 3, seed=4)
    (r,) = evaluate_baselines(pairs, postings, baselines=("bm25",), modes=("raw",))
    assert r.model == "bm25" and 0 <= r.metrics["auc"] <= 1 and r.metrics["queries"] == 3

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


def test_bootstrap_intervals_over_queries() -> None:
    import random

    from compress.data import Pair
    from compress.metrics import bootstrap_interval, evaluate_scores

    rng = random.Random(0)
    pairs = [Pair(f"q{q}", "x", f"j{q}-{c}", 2 if c == 0 else 0) for q in range(40) for c in range(10)]
    good = [1.0 - 0.05 * (int(p.job_id.split("-")[1]) + rng.random()) for p in pairs]  # relevant usually first
    noise = [rng.random() for _ in pairs]
    point = evaluate_scores(pairs, good)["ndcg@10"]
    lo, hi = bootstrap_interval(pairs, good, "ndcg@10", resamples=300)
    assert lo <= point <= hi
    assert bootstrap_interval(pairs, good, "ndcg@10", resamples=300) == (lo, hi)  # seeded: reproducible
    nlo, nhi = bootstrap_interval(pairs, noise, "auc", resamples=300)
    assert nlo < 0.6 and nhi > 0.4 and nhi - nlo < 0.3
    # Paired difference: a ranker against itself is exactly 0; a good one against noise excludes 0.
    assert bootstrap_interval(pairs, good, "mrr", baseline=good, resamples=100) == (0.0, 0.0)
    dlo, dhi = bootstrap_interval(pairs, good, "ndcg@10", baseline=noise, resamples=300)
    assert dlo > 0.2 and dhi >= dlo


def test_outside_split_kinds_grades_and_reserved_only() -> None:
    from compress.outside import QUERY_KINDS, generate_outside_split

    postings, pairs, kinds = generate_outside_split(9, seed=5)
    assert sorted(kinds.values()) == sorted(QUERY_KINDS * 3)  # the three kinds in rotation
    by_q: dict[str, list[int]] = defaultdict(list)
    for p in pairs:
        by_q[p.qid].append(p.label)
    for qid, ls in by_q.items():
        assert len(ls) == 20 and ls.count(0) == 18
        assert sorted(ls)[-2:] in ([1, 2], [2, 2])
        if kinds[qid] != "constrained":
            assert sorted(ls)[-2:] == [2, 2]
    assert {occupation_of(p.job_id) for p in pairs} <= reserved_ids()
    # Realistic postings: titled, placed, ~1,000 tokens (several thousand characters), the relevant one included.
    assert all(jp.title and jp.location and len(jp.description) > 2000 for jp in postings.values())
    for p in pairs:
        if p.label == 2 and kinds[p.qid] == "constrained" and by_q[p.qid].count(2) == 1:
            jp = postings[p.job_id]
            q = p.query.lower()
            assert (jp.location or "").lower() in q or (jp.title or "").split()[0].lower() in q.split()
    # Deterministic: the same seed gives the same split.
    assert generate_outside_split(9, seed=5)[1] == pairs


def test_outside_format_training_data_is_train_only_summary_read_and_graded() -> None:
    from compress.train import make_examples, sft_data

    data = sft_data(queries=2, hard_queries=2, outside_queries=6, outside_candidates=6, seed=1, max_doc_chars=600)
    outside = [p for p in data.pairs if p.qid in data.summary_only]
    assert len({p.qid for p in outside}) == 6 and len(outside) == 36
    assert data.recipe["esco_train_outside_format"]["kinds"] == {"alt_title": 2, "constrained": 2, "duty": 2}
    # Train occupations only: the reserved ones never enter training, whatever the generator.
    assert not {occupation_of(p.job_id) for p in data.pairs} & reserved_ids()
    ex = make_examples(data.pairs, data.postings, seed=1, summary_only=data.summary_only, graded=True)
    for p, e in zip(data.pairs, ex, strict=True):
        assert e.target == p.label / 2  # grade 1 (the right job in the wrong city or level) learns P(yes) = 0.5
        if p.qid in data.summary_only:
            # Read as the summarizer's summary (a header line, skills, summary), never the company blurb that
            # opens the raw long posting.
            assert "Summary:" in e.prompt
    flat = make_examples(data.pairs, data.postings, seed=1, summary_only=data.summary_only)
    assert {e.target for e in flat} == {0.0, 1.0}


def test_eval_breakdown_by_kind_and_paired_differences() -> None:
    import random

    from compress.evaluate import EvalResult, add_breakdown, add_differences, format_breakdown
    from compress.metrics import evaluate_scores
    from compress.outside import generate_outside_split

    _, pairs, kinds = generate_outside_split(12, seed=5)
    rng = random.Random(0)
    good = [p.label + rng.random() for p in pairs]  # ranks every relevant posting first
    noise = [rng.random() for _ in pairs]
    results = [
        EvalResult("noise", "summary", evaluate_scores(pairs, noise), 1.0, scores=noise),
        EvalResult("good", "summary", evaluate_scores(pairs, good), 1.0, scores=good),
    ]
    add_breakdown(results, pairs, kinds)
    add_differences(results, pairs, of=["good"], against=["noise", "good"])
    by_kind = results[1].extra["by_kind"]
    assert isinstance(by_kind, dict) and set(by_kind) == set(kinds.values())
    assert all(v["ndcg@10"] == 1.0 and v["queries"] == 4 for v in by_kind.values())
    diff = results[1].extra["diff_ci95"]
    assert isinstance(diff, dict) and list(diff) == ["noise"]  # never against itself; noise is not compared
    assert diff["noise"]["ndcg@10"][0] > 0  # the good model's lead excludes 0
    assert "diff_ci95" not in results[0].extra
    table = format_breakdown(results)
    assert "NDCG@10 constrained" in table and "good − noise (summary): NDCG@10 [+" in table
    assert results[1].row()["scores"] == [round(s, 6) for s in good]


def test_calibration_mixes_outside_format_summaries_from_train_occupations() -> None:
    from compress.prune import calibration_prompts

    default = calibration_prompts(10, seed=0, max_doc_chars=600)
    mixed = calibration_prompts(10, seed=0, max_doc_chars=600, outside_frac=0.5)
    assert len(default) == len(mixed) == 10
    assert mixed[:5] == default[:5]  # the default-format part is unchanged
    assert all("Summary:" in p for p in mixed[5:]) and not any("Summary:" in p for p in default)

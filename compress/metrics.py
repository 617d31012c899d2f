"""Ranking metrics on labelled pairs: AUC (all pairs, relevant = label > 0), NDCG@k (graded gains) and MRR
(first relevant result), the last two averaged over queries that have at least one relevant job.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from compress.data import Pair


def auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Probability that a random relevant pair outscores a random irrelevant one (ties count half)."""
    pos = [s for y, s in zip(labels, scores, strict=True) if y > 0]
    neg = [s for y, s in zip(labels, scores, strict=True) if y <= 0]
    if not pos or not neg:
        raise ValueError("AUC needs at least one relevant and one irrelevant pair")
    # Rank-sum (Mann–Whitney U) with average ranks for ties: O(n log n).
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels, strict=True) if y > 0)
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def _ranked(labels: Sequence[int], scores: Sequence[float]) -> list[int]:
    # Stable order on ties (input order) keeps the metrics deterministic.
    return [labels[i] for i in sorted(range(len(scores)), key=lambda i: -scores[i])]


def ndcg_at_k(labels: Sequence[int], scores: Sequence[float], k: int = 10) -> float:
    """NDCG@k with gain 2^label − 1 and discount log2(rank + 1)."""

    def dcg(ls: Sequence[int]) -> float:
        return sum((2**g - 1) / math.log2(r + 2) for r, g in enumerate(ls[:k]))

    ideal = dcg(sorted(labels, reverse=True))
    return dcg(_ranked(labels, scores)) / ideal if ideal > 0 else 0.0


def reciprocal_rank(labels: Sequence[int], scores: Sequence[float]) -> float:
    for r, g in enumerate(_ranked(labels, scores), 1):
        if g > 0:
            return 1.0 / r
    return 0.0


def evaluate_scores(pairs: Sequence[Pair], scores: Sequence[float], k: int = 10) -> dict[str, float]:
    """AUC over all pairs; NDCG@k and MRR averaged over queries with a relevant job."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        groups[p.qid].append(i)
    ndcgs, rrs = [], []
    for idx in groups.values():
        ls = [pairs[i].label for i in idx]
        ss = [scores[i] for i in idx]
        if any(g > 0 for g in ls):
            ndcgs.append(ndcg_at_k(ls, ss, k))
            rrs.append(reciprocal_rank(ls, ss))
    return {
        "auc": auc([p.label for p in pairs], scores),
        f"ndcg@{k}": sum(ndcgs) / len(ndcgs),
        "mrr": sum(rrs) / len(rrs),
        "pairs": float(len(pairs)),
        "queries": float(len(ndcgs)),
    }


# --- confidence intervals: the percentile bootstrap over queries ------------------------------------------
# Queries, not pairs, are the unit that was sampled (a query's 20 candidates are not independent draws), so
# each resample draws queries with replacement and recomputes the metric over their pairs (Sakai, "Statistical
# reform in information retrieval?", SIGIR Forum 2014; the usual practice for NDCG on small query sets).


def _by_query(pairs: Sequence[Pair]) -> list[list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        groups[p.qid].append(i)
    return list(groups.values())


def _metric_on(
    pairs: Sequence[Pair], scores: Sequence[float], queries: Sequence[Sequence[int]], metric: str, k: int
) -> float:
    idx = [i for q in queries for i in q]
    if metric == "auc":
        return auc([pairs[i].label for i in idx], [scores[i] for i in idx])
    per_query = []
    for q in queries:
        ls = [pairs[i].label for i in q]
        if any(g > 0 for g in ls):
            ss = [scores[i] for i in q]
            per_query.append(ndcg_at_k(ls, ss, k) if metric == f"ndcg@{k}" else reciprocal_rank(ls, ss))
    return sum(per_query) / len(per_query)


def bootstrap_interval(
    pairs: Sequence[Pair],
    scores: Sequence[float],
    metric: str = "ndcg@10",
    *,
    baseline: Sequence[float] | None = None,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    k: int = 10,
) -> tuple[float, float]:
    """The ``level`` percentile-bootstrap interval of ``metric`` (``auc``, ``ndcg@10``, ``mrr``) over queries.
    With ``baseline`` (another model's scores on the same pairs): the interval of the *difference*
    scores − baseline on the same resampled queries (paired), which is what "A beats B" needs: intervals of
    the two metrics that overlap can still have a difference whose interval excludes 0."""
    import random

    queries = _by_query(pairs)
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        draw = [queries[rng.randrange(len(queries))] for _ in queries]
        try:
            v = _metric_on(pairs, scores, draw, metric, k)
            if baseline is not None:
                v -= _metric_on(pairs, baseline, draw, metric, k)
        except (ValueError, ZeroDivisionError):  # a draw without a relevant (or irrelevant) pair
            continue
        values.append(v)
    if not values:
        return math.nan, math.nan
    values.sort()
    lo = values[int((1 - level) / 2 * (len(values) - 1))]
    hi = values[int((1 + level) / 2 * (len(values) - 1))]
    return lo, hi

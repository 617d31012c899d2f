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

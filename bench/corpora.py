"""Job texts and queries for the benchmarks, from one ``--corpus`` choice shared by every bench command.

- ``generated``: synthetic postings and tech-role queries (`engine.corpus`): fast, any number, lengths by design;
- ``esco-short``: real ESCO occupation descriptions (~80 words) as postings, ESCO-style queries;
- ``postings``: the same wrapped into realistic-length postings (~900 tokens, `compress.postings`).

Every ESCO occupation may appear (a benchmark trains and tunes nothing); job ids are ``<prefix>-<n>``, so runs
with different prefixes never share cache entries.
"""

from __future__ import annotations

import random

from schemas import JobPosted

CORPUS_CHOICES = ("generated", "esco-short", "postings")
CORPUS_HELP = (
    "job texts: 'generated' (synthetic), 'esco-short' (real ESCO descriptions, ~80 words) or 'postings' "
    "(realistic-length postings around real ESCO text, ~900 tokens)"
)


def job_postings(corpus: str, n: int, *, seed: int = 0, prefix: str = "job", paragraphs: int = 1) -> list[JobPosted]:
    """``n`` postings of the corpus (``paragraphs`` sizes the generated ones only)."""
    if corpus == "generated":
        from engine.corpus import postings

        return postings(n, seed=seed, paragraphs=paragraphs, prefix=prefix)
    if corpus not in CORPUS_CHOICES:
        raise ValueError(f"corpus must be one of {CORPUS_CHOICES}, got {corpus!r}")
    from compress.data import load_occupations, make_postings
    from compress.postings import long_posting

    occs = load_occupations("all")
    by_id = {o.id: o for o in occs}
    every = make_postings(occs, seed=seed)
    rng = random.Random(seed)
    chosen = [every[j] for j in rng.sample(sorted(every), min(n, len(every)))]
    while len(chosen) < n:  # more than ESCO has: repeat the texts under new ids
        chosen.append(chosen[len(chosen) % len(every)])
    out = []
    for i, p in enumerate(chosen):
        p = long_posting(p, by_id[p.job_id.rsplit(".", 1)[0]], seed) if corpus == "postings" else p
        out.append(
            JobPosted(
                job_id=f"{prefix}-{i:06d}",
                title=p.title,
                company=p.company,
                location=p.location,
                description=p.description,
                posted_at=p.posted_at,
            )
        )
    return out


def search_queries(corpus: str, n: int, *, seed: int = 0) -> list[str]:
    """``n`` queries: tech-role ones for ``generated``, ESCO-style (title words, place, seniority) otherwise."""
    if corpus == "generated":
        from engine.corpus import queries

        return queries(n, seed=seed)
    from compress.data import generate, load_occupations

    _, pairs = generate(load_occupations("all"), n, seed=seed)
    qs = list(dict.fromkeys(p.query for p in pairs))
    return [qs[i % len(qs)] for i in range(n)]

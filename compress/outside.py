"""The outside-shaped evaluation split (issue 29): queries as people type them, against realistic-length postings.

Only reserved occupations (compress/data/esco_reserved_occupations.txt), never trained, calibrated or tuned on.
Each query is one of three kinds, in rotation:

- ``alt_title``: a run of the occupation's alternative titles that is not its preferred title ("scenic
  painter" for a theatre painter);
- ``duty``: a duty or skill paraphrase without the title's words — from the description's first sentence or
  the label of one of its ESCO skills ("realise artistic visions technical constraints", "apply paint layers");
- ``constrained``: a title run plus a seniority, city or skill ("senior scenic painter", "scenic painter
  berlin", "scenic painter apply paint layers").

Candidates: 20 postings per query, each an ESCO description wrapped into a realistic posting (~1,000 tokens,
compress/postings.py) with title, company and city. The occupation's own two postings are relevant: for a
seniority or city constraint the one that meets it is grade 2 and the other grade 1 (the right job in the
wrong city still answers the query in part), otherwise both grade 2. Negatives are the hard kind of
`compress.data.generate_hard`: postings of occupations sharing a query word with their titles, then those
with the most similar descriptions, then random ones; occupations whose titles contain the whole query are
never negatives.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from typing import Literal

from compress.data import (
    CITIES,
    COMPANIES,
    SENIORITY,
    NegativeIndex,
    Occupation,
    Pair,
    _alt_title_run,
    _content_words,
    _duty_paraphrase,
    _title_run,
    load_occupations,
)
from compress.postings import long_posting, related_skills
from schemas import JobPosted

QueryKind = Literal["alt_title", "duty", "constrained"]
QUERY_KINDS: tuple[QueryKind, ...] = ("alt_title", "duty", "constrained")


def _skill_phrase(rng: random.Random, occ: Occupation) -> str | None:
    """The label of one of the occupation's related ESCO skills, without the title's words."""
    title = set(_content_words(occ.titles))
    labels = [s.label for s in related_skills(occ, k=12)]
    rng.shuffle(labels)
    for label in labels:
        words = [w for w in _content_words(label) if w not in title]
        if 2 <= len(words) <= 5:
            return " ".join(words)
    return None


def _postings_of(occ: Occupation, seed: int) -> list[JobPosted]:
    """Two long postings of ``occ`` in distinct cities; the first with a seniority word in its title."""
    rng = random.Random(zlib.crc32(f"{seed}:{occ.id}".encode()))
    cities = rng.sample([c for c in CITIES if c != "Remote"], 2)
    level = rng.choice(("senior", "junior", "lead"))
    out = []
    for k, city in enumerate(cities):
        title = occ.preferred.title()
        short = JobPosted(
            job_id=f"{occ.id}.o{k}",
            title=f"{level.title()} {title}" if k == 0 else title,
            company=rng.choice(COMPANIES),
            location=city,
            description=occ.description,
        )
        out.append(long_posting(short, occ, seed))
    return out


def _query(rng: random.Random, occ: Occupation, kind: QueryKind, first: JobPosted) -> tuple[str | None, bool]:
    """The query text, and whether only the first posting meets it (a seniority or city constraint)."""
    if kind == "alt_title":
        return _alt_title_run(rng, occ), False
    if kind == "duty":
        return (_duty_paraphrase(rng, occ) if rng.random() < 0.5 else _skill_phrase(rng, occ)), False
    title = _alt_title_run(rng, occ) if rng.random() < 0.5 else None
    title = title or _title_run(rng, occ)
    constraint = rng.choice(("seniority", "city", "skill"))
    if constraint == "seniority":
        # The first posting's title carries this level; a generic level word would fit neither better.
        level = (first.title or "").split()[0].lower()
        return (f"{level} {title}" if level in SENIORITY else None), True
    if constraint == "city":
        return f"{title} {(first.location or '').lower()}", True
    # A skill both postings may or may not list: both stay fully relevant.
    skill = _skill_phrase(rng, occ)
    return (f"{title} {skill}" if skill else None), False


def generate_outside(
    occupations: Sequence[Occupation],
    n_queries: int,
    *,
    candidates: int = 20,
    title_negatives: int = 8,
    similar_negatives: int = 6,
    seed: int = 0,
) -> tuple[dict[str, JobPosted], list[Pair], dict[str, QueryKind]]:
    """``n_queries`` queries over ``occupations`` (kinds in rotation), their candidates and labels; returns the
    postings used, the pairs, and each query id's kind."""
    rng = random.Random(seed)
    index = NegativeIndex(occupations)
    postings: dict[str, JobPosted] = {}
    pairs: list[Pair] = []
    kinds: dict[str, QueryKind] = {}
    made: dict[int, list[JobPosted]] = {}

    def postings_of(i: int) -> list[JobPosted]:
        if i not in made:
            made[i] = _postings_of(occupations[i], seed)
        return made[i]

    tries = 0
    while len(kinds) < n_queries and tries < n_queries * 30:
        tries += 1
        kind = QUERY_KINDS[len(kinds) % len(QUERY_KINDS)]
        oi = rng.randrange(len(occupations))
        occ = occupations[oi]
        own = postings_of(oi)
        query, first_only = _query(rng, occ, kind, own[0])
        if not query:
            continue
        chosen = index.hard_negatives(rng, oi, query, candidates - len(own), title_negatives, similar_negatives)
        qid = f"o{seed}-{len(kinds)}"
        kinds[qid] = kind
        for k, p in enumerate(own):
            postings[p.job_id] = p
            pairs.append(Pair(qid, query, p.job_id, 1 if first_only and k == 1 else 2))
        for i in chosen:
            neg = postings_of(i)[rng.randrange(2)]
            postings[neg.job_id] = neg
            pairs.append(Pair(qid, query, neg.job_id, 0))
    return postings, pairs, kinds


def generate_outside_split(
    n_queries: int, seed: int = 0, **kw: int
) -> tuple[dict[str, JobPosted], list[Pair], dict[str, QueryKind]]:
    """`generate_outside` over the reserved occupations only."""
    return generate_outside(load_occupations("heldout"), n_queries, seed=seed, **kw)

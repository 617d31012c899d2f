"""The demo's job corpus: real ESCO occupations (European Commission, CC BY 4.0) and queries whose right
answers are known, so the demo can show — and measure — that rankings follow meaning.

Each demo query names the ESCO occupations that answer it; the postings are those occupations' texts
(title, description) in a few cities plus distractors: occupations that share words with a query (the
lexical trap: "nurse assistant" for "registered nurse") and others drawn at random.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from compress.data import CITIES, COMPANIES, Occupation, load_occupations
from schemas import JobPosted


@dataclass(frozen=True)
class DemoQuery:
    text: str
    answers: tuple[str, ...]  # ESCO occupation id prefixes (8 hex digits) that are relevant


# What people type, and the occupations that answer it. "python developer" names neither occupation:
# the scorer has to know what a Python developer does.
DEMO_QUERIES = (
    DemoQuery("python developer", ("f2b15a0e", "c40a2919")),
    DemoQuery("registered nurse", ("8d3e8aaa",)),
    DemoQuery("electrician", ("4910419f",)),
    DemoQuery("head chef", ("1009be17",)),
    DemoQuery("accountant", ("eda0d957",)),
    DemoQuery("data scientist", ("258e46f9",)),
    DemoQuery("pharmacist", ("7c132147",)),
    DemoQuery("plumber", ("ed3cf43d",)),
    DemoQuery("primary school teacher", ("03d79393",)),
    DemoQuery("bus driver", ("00cee175",)),
)
# Occupations that share words with the queries but answer none of them.
HARD_DISTRACTORS = ("87d0795a", "c29f1a42", "0464b062", "3d7a1284", "099c6bb0", "2a22ff9e", "579254cf")
# Display titles of the occupations above (ESCO runs preferred and alternative titles together).
TITLES = {
    "f2b15a0e": "Software Developer",
    "c40a2919": "Web Developer",
    "8d3e8aaa": "General Care Nurse",
    "4910419f": "Electrician",
    "1009be17": "Chef",
    "eda0d957": "Accountant",
    "258e46f9": "Data Scientist",
    "7c132147": "Pharmacist",
    "ed3cf43d": "Plumber",
    "03d79393": "Primary School Teacher",
    "00cee175": "Bus Driver",
    "87d0795a": "Nurse Assistant",
    "c29f1a42": "Truck Driving Instructor",
    "0464b062": "ICT Security Administrator",
    "3d7a1284": "Dentistry Lecturer",
    "099c6bb0": "Hairdresser",
    "2a22ff9e": "Carpenter",
    "579254cf": "Mechanical Engineer",
}


@dataclass
class DemoCorpus:
    postings: list[JobPosted]
    queries: list[DemoQuery]
    relevant: dict[str, set[str]] = field(default_factory=dict)  # query text → relevant job ids
    titles: dict[str, str] = field(default_factory=dict)  # job id → display title


def _title(occ: Occupation) -> str:
    return TITLES.get(occ.id[:8]) or occ.preferred.title()


def demo_corpus(
    n_postings: int, prefix: str, *, per_occupation: int = 2, seed: int = 7, long: bool = False
) -> DemoCorpus:
    """``n_postings`` postings (at least the answers and hard distractors), job ids ``<prefix>-<occ>.<k>``;
    ``long``: each as a realistic-length posting around its ESCO text (`compress.postings.long_posting`)."""
    from compress.postings import long_posting

    rng = random.Random(seed)
    occs = [o for o in load_occupations("all") if not o.id.startswith("C")]  # "C…" rows are ISCO groups
    by_prefix = {o.id[:8]: o for o in occs}
    wanted = [by_prefix[p] for q in DEMO_QUERIES for p in q.answers] + [by_prefix[p] for p in HARD_DISTRACTORS]
    chosen = {o.id: o for o in wanted}
    others = [o for o in occs if o.id not in chosen]
    extra = max(0, math.ceil(n_postings / per_occupation) - len(chosen))
    for o in rng.sample(others, min(extra, len(others))):
        chosen[o.id] = o
    corpus = DemoCorpus(postings=[], queries=list(DEMO_QUERIES))
    for occ in chosen.values():
        for k, city in enumerate(rng.sample(CITIES, per_occupation)):
            jid = f"{prefix}-{occ.id[:8]}.{k}"
            title = _title(occ)
            posting = JobPosted(
                job_id=jid, title=title, company=rng.choice(COMPANIES), location=city, description=occ.description
            )
            corpus.postings.append(long_posting(posting, occ, seed) if long else posting)
            corpus.titles[jid] = f"{title} ({city})"
    for q in DEMO_QUERIES:
        corpus.relevant[q.text] = {p.job_id for p in corpus.postings if p.job_id.rsplit("-", 1)[1][:8] in q.answers}
    return corpus


def ndcg_at(ranked: list[str], relevant: set[str], k: int = 10) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, j in enumerate(ranked[:k]) if j in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal if ideal else 0.0

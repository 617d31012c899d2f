"""Realistic-length job postings around real ESCO text: the ``postings`` benchmark corpus.

ESCO occupation descriptions run ~80 words; real postings run 300–1,500. A posting here wraps one
occupation's real description in what real postings carry, so context compression has what it has in
production to cut:

- **About the company**: a blurb composed from a varied set of sentences (founding, size, mission, culture).
- **The role**: the occupation's ESCO description (real text; the relevance label is the occupation's).
- **What you will do / What we are looking for**: real ESCO *skill* descriptions (``skills.csv`` of the
  same package) that share the most informative words with the occupation (IDF-weighted overlap), as
  responsibilities and requirements.
- **What we offer**, **How to apply** and an **equal-opportunity statement**, drawn from varied sets.

Deterministic for a seed: a posting depends only on (occupation, job id, seed). Lengths are drawn per
posting (section counts), so a corpus spans ~300 to ~1,500 words, mean ~800 words (~1,000 tokens).
ESCO data: CC BY 4.0, "ESCO, European Commission".
"""

from __future__ import annotations

import csv
import math
import random
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from compress.data import STOPWORDS, Occupation, esco_csv
from schemas import JobPosted

Corpus = Literal["esco-short", "postings"]
CORPORA: tuple[Corpus, ...] = ("esco-short", "postings")

# A skill word shared by more than this many skills says nothing about the occupation (e.g. "manage").
_MAX_SKILL_DF = 400

_ABOUT = (
    "{company} was founded in {year} and today employs more than {size} people across {offices} offices.",
    "At {company}, we believe that good work starts with people who care about what they do.",
    "{company} is one of the fastest-growing employers in the region, with customers in over {markets} countries.",
    "Our mission is to make everyday services simpler, safer and more affordable for the communities we serve.",
    "We are an independent, family-owned business that has been serving the same neighbourhoods for generations.",
    "As part of an international group, {company} combines the resources of a large organisation with the "
    "agility of a small team.",
    "Our teams work in a culture of trust, feedback and continuous learning, where every voice is heard.",
    "We invest heavily in training: every new colleague gets a structured onboarding programme and a mentor.",
    "Sustainability is at the heart of our strategy, and we have committed to net-zero operations by {netzero}.",
    "In the last year alone we opened {offices} new sites and welcomed hundreds of new colleagues.",
    "We were recognised as a top employer in {award_year} for our commitment to development and wellbeing.",
    "Our customers range from small local businesses to public institutions and large international companies.",
    "We are proud of our open, diverse and inclusive workplace, where people can be themselves.",
    "Behind every project is a team that takes ownership, supports each other and celebrates success together.",
)
_ROLE_INTRO = (
    "We are looking for a {title} to join our team in {location}.",
    "To strengthen our team in {location}, we are hiring a motivated {title}.",
    "This is an exciting opportunity for an experienced {title} who wants to make a difference.",
    "As our new {title}, you will play a key part in a team that is growing fast.",
    "Are you a {title} looking for your next challenge? Then read on.",
)
_BENEFITS = (
    "A competitive salary reviewed every year, plus a performance bonus.",
    "{days} days of paid holiday, plus public holidays.",
    "A company pension scheme with employer contributions.",
    "Private health insurance for you and your family.",
    "Flexible working hours and the option to work from home part of the week where the role allows it.",
    "A personal training budget and paid time for courses and certifications.",
    "Subsidised public transport ticket or a company bicycle.",
    "Free fruit, coffee and a staff canteen with discounted meals.",
    "An employee assistance programme offering confidential counselling.",
    "Parental leave above the statutory minimum.",
    "Regular team events, a summer party and an end-of-year celebration.",
    "Discounts on our products and with partner companies.",
    "Clear career paths with regular development conversations.",
    "Modern equipment and a safe, well-organised workplace.",
    "Relocation support for candidates moving from abroad.",
    "Life insurance and income protection cover.",
)
_APPLY = (
    "Please send your CV and a short cover letter through our careers page, quoting reference {ref}.",
    "Apply online in just a few minutes; we will get back to you within two weeks.",
    "Interested? Submit your application with your earliest start date and salary expectations.",
    "Our recruitment process has two interviews and, for some roles, a short practical exercise.",
    "If you have questions about the role, our recruitment team is happy to help by phone or e-mail.",
    "Applications are reviewed on a rolling basis, so we encourage you to apply early.",
    "Please note that we can only consider applications submitted through our online portal.",
)
_EEO = (
    "{company} is an equal opportunity employer. We welcome applications from all qualified candidates "
    "regardless of age, disability, gender identity, marital status, race, religion or sexual orientation.",
    "We are committed to diversity and inclusion and to providing reasonable adjustments during the "
    "recruitment process for candidates with disabilities.",
    "All qualified applicants will receive consideration for employment without regard to any characteristic "
    "protected by law.",
    "We value the different perspectives that people from all backgrounds bring to our teams and actively "
    "encourage applications from under-represented groups.",
)
_EDUCATION = (
    "A relevant vocational qualification or degree, or equivalent professional experience.",
    "At least {years} years of experience in a similar position.",
    "Very good communication skills and the ability to work in a team.",
    "A structured, reliable and independent way of working.",
    "Good written and spoken English; other languages are an advantage.",
    "A valid driving licence is an advantage.",
)


@dataclass(frozen=True)
class Skill:
    label: str
    description: str  # ESCO's sentence(s) describing the skill


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z][a-z\-]+", text.lower()) if w not in STOPWORDS and len(w) > 2]


def _split_skill(text: str) -> Skill:
    """ESCO skill rows: lower-case labels (preferred + alternatives run together), then the description,
    which starts at the first capital letter."""
    text = " ".join(text.split())
    m = re.search(r"(?:^|\s)([A-Z])", text)
    if m is None:
        return Skill(text, "")
    labels, desc = text[: m.start(1)].strip(), text[m.start(1) :].strip()
    return Skill(" ".join(labels.split()[:6]), desc)


@lru_cache(maxsize=1)
def load_skills() -> tuple[tuple[Skill, ...], dict[str, list[int]], dict[str, float]]:
    """ESCO skills with a description, their word index and each word's IDF."""
    skills: list[Skill] = []
    with open(esco_csv("skills.csv"), newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            s = _split_skill(row["description"])
            if len(s.description) >= 40:
                skills.append(s)
    index: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(skills):
        for w in set(_words(f"{s.label} {s.description}")):
            index[w].append(i)
    n = len(skills)
    idf = {w: math.log(n / len(ix)) for w, ix in index.items()}
    return tuple(skills), dict(index), idf


def related_skills(occ: Occupation, k: int = 24) -> list[Skill]:
    """The ``k`` skills sharing the most informative words with the occupation (title words count double)."""
    skills, index, idf = load_skills()
    score: Counter[int] = Counter()
    title = set(_words(occ.titles))
    for w, n in Counter(_words(occ.description) + _words(occ.titles)).items():
        ix = index.get(w, ())
        if not ix or len(ix) > _MAX_SKILL_DF:
            continue
        weight = idf[w] * (2.0 if w in title else 1.0) * min(n, 3)
        for i in ix:
            score[i] += weight
    return [skills[i] for i, _ in score.most_common(k)]


def _sentences(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


def long_posting(posting: JobPosted, occ: Occupation, seed: int = 0) -> JobPosted:
    """``posting`` (title, company, location, the occupation's description) as a realistic-length posting."""
    # One generator per (seed, job id): a posting does not change when other postings join the corpus.
    rng = random.Random(zlib.crc32(f"{seed}:{posting.job_id}".encode()))
    fill = {
        "company": posting.company or "our company",
        "title": posting.title or occ.preferred,
        "location": posting.location or "our main office",
        "year": rng.randrange(1950, 2020),
        "size": rng.choice((50, 120, 300, 800, 2500, 10000)),
        "offices": rng.randrange(2, 40),
        "markets": rng.randrange(5, 60),
        "netzero": rng.randrange(2028, 2045),
        "award_year": rng.randrange(2019, 2026),
        "days": rng.randrange(25, 31),
        "ref": f"{rng.randrange(10000, 99999)}",
        "years": rng.choice((2, 3, 5)),
    }
    related = related_skills(occ)
    rng.shuffle(related)
    n_duties = rng.randrange(4, 12)
    n_reqs = rng.randrange(3, 10)
    duties, reqs = related[:n_duties], related[n_duties : n_duties + n_reqs]
    sections: list[str] = []
    sections.append("About us\n" + " ".join(s.format(**fill) for s in rng.sample(_ABOUT, rng.randrange(3, 9))))
    sections.append("The role\n" + rng.choice(_ROLE_INTRO).format(**fill) + " " + _sentences(posting.description))
    if duties:
        sections.append("What you will do\n" + "\n".join(f"- {_sentences(s.description)}" for s in duties))
    lines = [f"- {_sentences(s.description)}" for s in reqs]
    lines += [f"- {e.format(**fill)}" for e in rng.sample(_EDUCATION, rng.randrange(1, 4))]
    sections.append("What we are looking for\n" + "\n".join(lines))
    sections.append(
        "What we offer\n" + "\n".join(f"- {b.format(**fill)}" for b in rng.sample(_BENEFITS, rng.randrange(3, 10)))
    )
    sections.append("How to apply\n" + " ".join(a.format(**fill) for a in rng.sample(_APPLY, rng.randrange(1, 4))))
    sections.append(" ".join(e.format(**fill) for e in rng.sample(_EEO, rng.randrange(1, 3))))
    return JobPosted(
        job_id=posting.job_id,
        title=posting.title,
        company=posting.company,
        location=posting.location,
        description="\n\n".join(sections),
        posted_at=posting.posted_at,
    )


def lengthen(postings: dict[str, JobPosted], occupations: Sequence[Occupation], seed: int = 0) -> dict[str, JobPosted]:
    """Every posting of ``postings`` (job id ``<occupation id>.<k>``, as `compress.data` makes them) lengthened."""
    by_id = {o.id: o for o in occupations}
    return {j: long_posting(p, by_id[j.rsplit(".", 1)[0]], seed) for j, p in postings.items()}


def corpus_split(
    corpus: Corpus, split: Literal["train", "heldout"], n_queries: int, seed: int = 0
) -> tuple[dict[str, JobPosted], list[object]]:
    """`compress.data.generate_split` on the chosen corpus: the same pairs and labels; ``postings`` swaps each
    ESCO description for a realistic-length posting around it."""
    from compress.data import generate, load_occupations

    occs = load_occupations(split)
    postings, pairs = generate(occs, n_queries, seed=seed)
    if corpus == "postings":
        used = {p.job_id for p in pairs}
        postings = lengthen({j: p for j, p in postings.items() if j in used}, occs, seed)
    return postings, list(pairs)

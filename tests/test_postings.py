"""The realistic-length postings corpus (compress/postings.py): real ESCO text at real postings' length, the
labels of the ESCO split it wraps, deterministic, and the reserved occupations kept where they belong."""

from __future__ import annotations

import csv
import statistics

from compress.data import generate_split, load_occupations, occupation_of, reserved_ids
from compress.postings import corpus_split, esco_csv, long_posting, related_skills


def test_postings_have_real_postings_length_and_the_same_pairs_as_the_short_split() -> None:
    short, short_pairs = corpus_split("esco-short", "heldout", 12, seed=3)
    long, long_pairs = corpus_split("postings", "heldout", 12, seed=3)
    assert long_pairs == short_pairs, "the corpus changes the text, never the pairs or their labels"
    words = [len(p.description.split()) for p in long.values()]
    # Real postings run 300–1,500 words (the range); ESCO descriptions ~80.
    assert min(words) >= 300 and max(words) <= 1500, (min(words), max(words))
    assert 600 <= statistics.mean(words) <= 1000
    assert statistics.mean(len(short[j].description.split()) for j in long) < 150
    for j, p in long.items():
        # The occupation's own description is in its posting, with its title, company and place unchanged.
        assert short[j].description.rstrip(".") in p.description
        assert (p.title, p.company, p.location) == (short[j].title, short[j].company, short[j].location)
    sections = ("About us", "The role", "What you will do", "What we are looking for", "What we offer", "How to apply")
    assert all(all(s in p.description for s in sections) for p in long.values())


def test_responsibilities_are_real_esco_skill_descriptions_related_to_the_occupation() -> None:
    with open(esco_csv("skills.csv"), newline="", encoding="utf-8") as fh:
        skill_text = " ".join(" ".join(row["description"].split()) for row in csv.DictReader(fh))
    occ = next(o for o in load_occupations("train") if "electrician" in o.titles)
    skills = related_skills(occ, k=10)
    assert all(s.description in skill_text for s in skills)
    assert sum("electric" in s.description.lower() for s in skills) >= 5, [s.description[:60] for s in skills]


def test_a_posting_depends_only_on_its_job_and_the_seed() -> None:
    postings, _ = generate_split("train", 4, seed=1)
    occs = {o.id: o for o in load_occupations("train")}
    jid = sorted(postings)[0]
    a = long_posting(postings[jid], occs[occupation_of(jid)], seed=0)
    assert a == long_posting(postings[jid], occs[occupation_of(jid)], seed=0)
    assert a.description != long_posting(postings[jid], occs[occupation_of(jid)], seed=1).description


def test_heldout_postings_are_reserved_occupations_only_and_train_ones_never() -> None:
    reserved = reserved_ids()
    held, _ = corpus_split("postings", "heldout", 6, seed=0)
    train, _ = corpus_split("postings", "train", 6, seed=0)
    assert all(occupation_of(j) in reserved for j in held)
    assert not any(occupation_of(j) in reserved for j in train)


def test_every_bench_command_takes_the_corpus_and_gets_those_texts() -> None:
    from app.cli import build_parser
    from bench.corpora import job_postings, search_queries

    parser = build_parser()
    for cmd in (
        "bench",
        "bench-headline",
        "bench-models",
        "bench-cpu-engine",
        "bench-soak",
        "bench-lanes",
        "bench-score-cache",
    ):
        extra = ["scorer-full"] if cmd == "bench-models" else []
        assert parser.parse_args([cmd, *extra, "--corpus", "postings"]).corpus == "postings", cmd
    short = job_postings("esco-short", 6, seed=4, prefix="b")
    long = job_postings("postings", 6, seed=4, prefix="b")
    assert [p.job_id for p in short] == [f"b-{i:06d}" for i in range(6)] == [p.job_id for p in long]
    assert all(s.description.rstrip(".") in lp.description for s, lp in zip(short, long, strict=True))
    assert min(len(p.description.split()) for p in long) >= 300 > max(len(p.description.split()) for p in short)
    assert len(job_postings("generated", 3, prefix="g")) == 3 and len(search_queries("esco-short", 5, seed=1)) == 5

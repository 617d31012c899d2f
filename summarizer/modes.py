"""The three summarizer modes behind one small interface, picked per deployment (`summarizer_mode`).

Every mode renders the same kind of text the scorer reads — a structured header, then a summary —
and stays within the token budget, counted with `approx_tokens` (the existing estimate) or, with the
`budget_tokenizer` setting, exactly with the scorer's tokenizer:

- extractive: header (title, company, location, seniority, skills) + the sentences most similar to the
  title/skills by MiniLM embeddings, chosen with MMR so the budget is not spent on paraphrases.
- hybrid: a richer header parsed from the posting (remote, salary, employment type; skills from ESCO)
  + a short extract (at most `HYBRID_SUMMARY_SHARE` of the budget): more compression, fields first.
- abstractive: header + a summary written by a decoder SLM in vLLM (temperature 0, max tokens = what
  the budget leaves after the header). The header is parsed, not generated, so the fields the scorer
  relies on survive even when a 135M model writes something vague.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from schemas import JobPosted
from summarizer.extractive import (
    Extracted,
    approx_tokens,
    boilerplate_hits,
    detect_seniority,
    detect_skills,
    header_fields,
    heuristic_scores,
    raw_tokens,
    select_greedy,
    select_mmr,
    split_sentences,
)

if TYPE_CHECKING:
    from jobscore.settings import SummarizerSettings
    from summarizer.abstractive import Generator
    from summarizer.embed import MiniLM
    from summarizer.skills import SkillMatcher

Mode = str
HYBRID_SUMMARY_SHARE = 0.5
# Boilerplate sentences (benefits, EEO, how to apply) are pushed down by this much cosine similarity
# per boilerplate word: MiniLM finds "competitive salary" close to any job title otherwise.
BOILERPLATE_PENALTY = 0.15


class PostingSummarizer(Protocol):
    mode: Mode

    def summarize_batch(self, postings: Sequence[JobPosted]) -> list[Extracted]:
        """One `Extracted` per posting, in order. Blocking (the service calls it in a thread)."""
        ...

    def close(self) -> None: ...


TokenCounter = Callable[[str], int]


def hf_token_counter(path: str | Path) -> TokenCounter:
    """Exact token counts with a model's tokenizer (the scorer's), no special tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False))

    return count


def fit_text(text: str, budget: int, count: TokenCounter = approx_tokens) -> str:
    """The longest prefix of ``text`` within ``budget`` tokens, cut at a sentence, else a word."""
    if count(text) <= budget:
        return text
    out = ""
    for s in split_sentences(text):
        cand = f"{out} {s}".strip()
        if count(cand) > budget:
            break
        out = cand
    if out:
        return out
    words = text.split()
    while words and count(" ".join(words)) > budget:
        words = words[: max(0, int(len(words) * 0.9) - 1)]
    return " ".join(words)


def _render(header: str, body: str) -> str:
    return header + (f"\nSummary: {body}" if body else "")


def _body_budget(header: str, budget: int, count: TokenCounter) -> int:
    return budget - count(header + "\nSummary:")


def _extracted(
    p: JobPosted,
    header: str,
    body: str,
    seniority: str,
    skills: tuple[str, ...],
    budget: int,
    count: TokenCounter = approx_tokens,
) -> Extracted:
    summary = _render(header, body)
    # Pieces were budgeted one by one; joined, a subword tokenizer may merge or split differently.
    # Trim the body until the whole text fits (rarely more than one step).
    n = count(summary)
    while body and n > budget:
        body = fit_text(body, count(body) - (n - budget) - 1, count)
        summary = _render(header, body)
        n = count(summary)
    return Extracted(
        summary=summary,
        raw_tokens=raw_tokens(p, count),
        summary_tokens=n,
        seniority=seniority,
        skills=skills,
    )


class _SentencePicker:
    """Sentence selection shared by extractive and hybrid: MiniLM + MMR when an embedder is given,
    else the keyword heuristic."""

    def __init__(
        self, embedder: MiniLM | None, mmr_lambda: float, prefilter: int = 24, count: TokenCounter = approx_tokens
    ) -> None:
        self.count = count
        self.embedder = embedder
        self.mmr_lambda = mmr_lambda
        self.prefilter = prefilter

    def pick(
        self, postings: Sequence[JobPosted], skills: Sequence[tuple[str, ...]], budgets: Sequence[int]
    ) -> list[str]:
        sentences = [split_sentences(p.description) for p in postings]
        if self.embedder is None:
            return [
                " ".join(ss[i] for i in select_greedy(ss, heuristic_scores(ss, p.title, sk), b, self.count))
                for p, ss, sk, b in zip(postings, sentences, skills, budgets, strict=True)
            ]
        # The encoder is the cost (~1 ms per sentence on two cores): embed only the best
        # `prefilter` sentences by the keyword heuristic, which is cheap and already drops boilerplate.
        cands: list[list[str]] = []
        for p, ss, sk in zip(postings, sentences, skills, strict=True):
            h = heuristic_scores(ss, p.title, sk)
            top = sorted((i for i in range(len(ss)) if h[i] != -math.inf), key=lambda i: -h[i])[: self.prefilter]
            cands.append([ss[i] for i in sorted(top)])
        # One encoder call for the whole batch: queries (title + skills) and the candidate sentences.
        queries = [f"{p.title}. {', '.join(sk)}" for p, sk in zip(postings, skills, strict=True)]
        flat = [s for ss in cands for s in ss]
        vecs = self.embedder.encode(queries + flat)
        qv, sv = vecs[: len(queries)], vecs[len(queries) :]
        out: list[str] = []
        at = 0
        for k, ss in enumerate(cands):
            m = sv[at : at + len(ss)]
            at += len(ss)
            if not ss:
                out.append("")
                continue
            rel = (m @ qv[k]).astype(np.float64)
            rel -= BOILERPLATE_PENALTY * np.array([boilerplate_hits(s) for s in ss])
            sim = (m @ m.T).tolist()
            chosen = select_mmr(ss, rel.tolist(), sim, budgets[k], self.mmr_lambda, count=self.count)
            out.append(" ".join(ss[i] for i in chosen))
        return out


class ExtractiveSummarizer:
    mode: Mode = "extractive"

    def __init__(
        self,
        budget: int,
        embedder: MiniLM | None = None,
        mmr_lambda: float = 0.7,
        count: TokenCounter = approx_tokens,
    ) -> None:
        self.budget = budget
        self.count = count
        self.picker = _SentencePicker(embedder, mmr_lambda, count=count)

    def summarize_batch(self, postings: Sequence[JobPosted]) -> list[Extracted]:
        seniority = [detect_seniority(p.title, p.description) for p in postings]
        skills = [detect_skills(f"{p.title}. {p.description}") for p in postings]
        headers = [header_fields(p, se, sk) for p, se, sk in zip(postings, seniority, skills, strict=True)]
        budgets = [_body_budget(h, self.budget, self.count) for h in headers]
        bodies = self.picker.pick(postings, skills, budgets)
        return [
            _extracted(p, h, b, se, sk, self.budget, self.count)
            for p, h, b, se, sk in zip(postings, headers, bodies, seniority, skills, strict=True)
        ]

    def close(self) -> None:
        pass


# --- hybrid: parsed fields ------------------------------------------------------------------------

_CUR = r"(?:[$€£]|USD|EUR|GBP|CHF)"
_AMOUNT = r"\d{1,3}(?:[,.]\d{3})*(?:\.\d+)?\s?[kK]?"
_SALARY = re.compile(
    rf"{_CUR}\s?{_AMOUNT}(?:\s?(?:-|–|to)\s?{_CUR}?\s?{_AMOUNT})?"
    r"(?:\s?(?:per|/|a)\s?(?:year|yr|annum|hour|hr|month|week))?",
    re.I,
)
_REMOTE = (
    ("remote", re.compile(r"\b(?:fully remote|remote[- ]first|100% remote|work from home|remote)\b", re.I)),
    ("hybrid", re.compile(r"\bhybrid\b", re.I)),
    ("on-site", re.compile(r"\b(?:on[- ]?site|in[- ]office|in the office)\b", re.I)),
)
_EMPLOYMENT = (
    ("full-time", re.compile(r"\bfull[- ]time\b", re.I)),
    ("part-time", re.compile(r"\bpart[- ]time\b", re.I)),
    ("contract", re.compile(r"\b(?:contract(?:or)?|freelance|fixed[- ]term)\b", re.I)),
    ("internship", re.compile(r"\bintern(?:ship)?\b", re.I)),
)


def detect_salary(text: str) -> str:
    m = _SALARY.search(text)
    return m.group(0).strip() if m else ""


def detect_remote(location: str, text: str) -> str:
    for label, rx in _REMOTE:
        if rx.search(location):
            return label
    for label, rx in _REMOTE:
        if rx.search(text):
            return label
    return ""


def detect_employment(text: str) -> str:
    for label, rx in _EMPLOYMENT:
        if rx.search(text):
            return label
    return ""


def hybrid_header(p: JobPosted, seniority: str, skills: tuple[str, ...]) -> str:
    """The fixed template's header: always the same field order, absent fields left out."""
    text = f"{p.title}. {p.description}"
    fields = [
        ("Title", p.title),
        ("Company", p.company),
        ("Location", p.location),
        ("Remote", detect_remote(p.location, text)),
        ("Seniority", seniority),
        ("Employment", detect_employment(text)),
        ("Salary", detect_salary(p.description)),
    ]
    header = " | ".join(f"{k}: {v}" for k, v in fields if v)
    if skills:
        header += "\nSkills: " + ", ".join(skills)
    return header


class HybridSummarizer:
    mode: Mode = "hybrid"

    def __init__(
        self,
        budget: int,
        embedder: MiniLM | None = None,
        mmr_lambda: float = 0.7,
        matcher: SkillMatcher | None = None,
        max_skills: int = 10,
        count: TokenCounter = approx_tokens,
    ) -> None:
        from summarizer.skills import default_matcher

        self.budget = budget
        self.count = count
        self.picker = _SentencePicker(embedder, mmr_lambda, count=count)
        self.matcher = matcher or default_matcher()
        self.max_skills = max_skills

    def skills(self, p: JobPosted) -> tuple[str, ...]:
        text = f"{p.title}. {p.description}"
        # "Required skills: a, b" lists first (the employer's own words), then vocabulary matches.
        out = list(detect_skills(text, vocabulary=(), limit=self.max_skills))
        for s in self.matcher.find(text, limit=self.max_skills * 2):
            if s not in out:
                out.append(s)
        return tuple(out[: self.max_skills])

    def summarize_batch(self, postings: Sequence[JobPosted]) -> list[Extracted]:
        seniority = [detect_seniority(p.title, p.description) for p in postings]
        skills = [self.skills(p) for p in postings]
        headers = [hybrid_header(p, se, sk) for p, se, sk in zip(postings, seniority, skills, strict=True)]
        # Fields carry most of the signal; the extract gets what is left, capped to a share of the budget.
        budgets = [
            min(int(self.budget * HYBRID_SUMMARY_SHARE), _body_budget(h, self.budget, self.count)) for h in headers
        ]
        bodies = self.picker.pick(postings, skills, budgets)
        return [
            _extracted(p, h, b, se, sk, self.budget, self.count)
            for p, h, b, se, sk in zip(postings, headers, bodies, seniority, skills, strict=True)
        ]

    def close(self) -> None:
        pass


# --- abstractive ----------------------------------------------------------------------------------


class AbstractiveSummarizer:
    mode: Mode = "abstractive"

    def __init__(
        self, budget: int, generator: Generator, owns_generator: bool = True, count: TokenCounter = approx_tokens
    ) -> None:
        self.budget = budget
        self.count = count
        self.generator = generator
        self.owns_generator = owns_generator

    def summarize_batch(self, postings: Sequence[JobPosted]) -> list[Extracted]:
        seniority = [detect_seniority(p.title, p.description) for p in postings]
        skills = [detect_skills(f"{p.title}. {p.description}") for p in postings]
        headers = [header_fields(p, se, sk) for p, se, sk in zip(postings, seniority, skills, strict=True)]
        left = [_body_budget(h, self.budget, self.count) for h in headers]
        # Ask for what the budget leaves (model tokens ≈ estimated tokens); cut to the estimate after.
        texts = self.generator.summarize(postings, max_tokens=max(8, min(left)))
        bodies = [
            fit_text(" ".join(t.split()), b, self.count) if b > 0 else "" for t, b in zip(texts, left, strict=True)
        ]
        return [
            _extracted(p, h, b, se, sk, self.budget, self.count)
            for p, h, b, se, sk in zip(postings, headers, bodies, seniority, skills, strict=True)
        ]

    def close(self) -> None:
        if self.owns_generator:
            self.generator.close()


def make_summarizer(s: SummarizerSettings) -> PostingSummarizer:
    """The deployment's summarizer, models loaded (MiniLM ~1 s; vLLM engine ~40-60 s on CPU)."""
    count = hf_token_counter(s.budget_tokenizer) if s.budget_tokenizer else approx_tokens
    embedder = None
    if s.extractive_embeddings and s.summarizer_mode in ("extractive", "hybrid"):
        from summarizer.embed import MiniLM

        embedder = MiniLM()
    if s.summarizer_mode == "extractive":
        return ExtractiveSummarizer(s.summary_budget_tokens, embedder, s.mmr_lambda, count=count)
    if s.summarizer_mode == "hybrid":
        return HybridSummarizer(s.summary_budget_tokens, embedder, s.mmr_lambda, count=count)
    from summarizer.abstractive import VllmGenerator

    return AbstractiveSummarizer(
        s.summary_budget_tokens,
        VllmGenerator(s.abstractive_model, max_input_tokens=s.abstractive_max_input_tokens),
        count=count,
    )

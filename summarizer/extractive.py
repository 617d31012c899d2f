"""Extractive summarization: keep the sentences that say what the job is, under a token budget.

The output is a fixed template the scorer reads — structured fields first (title, company, location,
seniority, skills), then the selected sentences in their original order:

    Title: Senior Data Scientist | Company: Acme | Location: Berlin, Germany | Seniority: senior
    Skills: python, sql, statistics
    Summary: You will ... . Strong knowledge of ... .

Sentences are scored by what a searcher matches on (title words, skills, requirements) and penalised
for boilerplate (benefits, EEO statements, how to apply), so the budget goes to the job, not the perks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from schemas import JobPosted

_WORD = re.compile(r"\w+|[^\w\s]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|\n{1,}")

SENIORITY_WORDS = {
    "intern": "intern",
    "internship": "intern",
    "trainee": "entry",
    "graduate": "entry",
    "junior": "junior",
    "entry": "entry",
    "associate": "junior",
    "mid": "mid",
    "senior": "senior",
    "sr": "senior",
    "staff": "staff",
    "lead": "lead",
    "principal": "principal",
    "head": "head",
    "director": "director",
    "manager": "manager",
    "vp": "executive",
    "chief": "executive",
}
BOILERPLATE_WORDS = {
    "benefits",
    "salary",
    "equity",
    "snacks",
    "gym",
    "terrace",
    "equal",
    "opportunity",
    "employer",
    "applicants",
    "regardless",
    "characteristics",
    "diversity",
    "apply",
    "resume",
    "cover",
    "letter",
    "careers",
    "celebrate",
    "relocation",
    "perks",
    "insurance",
    "vacation",
    "pto",
    "401k",
}
REQUIREMENT_WORDS = {
    "experience",
    "required",
    "requirements",
    "responsible",
    "responsibilities",
    "you",
    "will",
    "must",
    "knowledge",
    "skills",
    "proficient",
    "proficiency",
    "degree",
    "years",
    "own",
    "build",
    "design",
}
# A compact default vocabulary; deployments extend it (the hybrid mode reads ESCO skills).
DEFAULT_SKILLS = (
    "python",
    "java",
    "go",
    "rust",
    "c++",
    "typescript",
    "javascript",
    "react",
    "sql",
    "postgresql",
    "kubernetes",
    "docker",
    "terraform",
    "aws",
    "gcp",
    "azure",
    "linux",
    "pytorch",
    "tensorflow",
    "cuda",
    "machine learning",
    "statistics",
    "pandas",
    "spark",
    "kafka",
    "graphql",
    "rest apis",
    "css",
    "figma",
    "photoshop",
    "excel",
    "sap",
    "salesforce",
    "crm",
    "gaap",
    "cad",
    "solidworks",
    "fea",
    "agile",
    "ci/cd",
    "siem",
    "iam",
    "a/b testing",
    "mlops",
    "distributed systems",
    "observability",
    "patient care",
    "forklift",
    "negotiation",
    "zendesk",
    "typography",
    "branding",
    "accessibility",
)


def approx_tokens(text: str) -> int:
    """Token count estimate for budgeting (~1.3 subword tokens per word/punctuation piece).

    Close enough for a budget across BPE vocabularies; the worker counts exact tokens itself.
    """
    return math.ceil(len(_WORD.findall(text)) * 1.3)


@dataclass(frozen=True)
class Extracted:
    summary: str
    raw_tokens: int
    summary_tokens: int
    seniority: str
    skills: tuple[str, ...]


def detect_seniority(title: str, description: str) -> str:
    for w in re.findall(r"[a-z]+", title.lower()):
        if w in SENIORITY_WORDS:
            return SENIORITY_WORDS[w]
    m = re.search(r"(\d+)\+?\s+(?:or more\s+)?years", description.lower())
    if m:
        years = int(m.group(1))
        return "junior" if years < 2 else "mid" if years < 5 else "senior"
    return ""


def detect_skills(text: str, vocabulary: tuple[str, ...] = DEFAULT_SKILLS, limit: int = 8) -> tuple[str, ...]:
    low = f" {text.lower()} "
    found: list[tuple[int, str]] = []
    for s in vocabulary:
        i = low.find(s)
        # Word-boundary check by hand: skills contain '+', '/' and spaces that \b handles badly.
        while i >= 0 and (low[i - 1].isalnum() or low[i + len(s)].isalnum()):
            i = low.find(s, i + 1)
        if i >= 0:
            found.append((i, s))
    # "Required skills: a, b, c" lines name skills outside any vocabulary.
    for m in re.finditer(r"(?:required skills|skills|requirements)\s*:\s*([^.\n]+)", text, re.I):
        for s in m.group(1).split(","):
            s = s.strip().lower()
            if 1 < len(s) <= 40:
                found.append((m.start(), s))
    out: list[str] = []
    for _, s in sorted(found):
        if s not in out:
            out.append(s)
    return tuple(out[:limit])


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s and len(s.strip()) > 2]


def header_fields(p: JobPosted, seniority: str, skills: tuple[str, ...]) -> str:
    fields = [f"Title: {p.title}" if p.title else ""]
    fields += [f"Company: {p.company}" if p.company else "", f"Location: {p.location}" if p.location else ""]
    fields += [f"Seniority: {seniority}" if seniority else ""]
    header = " | ".join(f for f in fields if f)
    if skills:
        header += "\nSkills: " + ", ".join(skills)
    return header


def heuristic_scores(sentences: list[str], title: str, skills: tuple[str, ...]) -> list[float]:
    """Keyword relevance per sentence: title words, skills and requirement words up, boilerplate down."""
    title_words = {w for w in re.findall(r"[a-z]+", title.lower()) if len(w) > 2}
    out: list[float] = []
    for i, s in enumerate(sentences):
        words = re.findall(r"[a-z0-9+/#]+", s.lower())
        if not words:
            out.append(-math.inf)
            continue
        wset = set(words)
        score = 2.0 * len(wset & title_words)
        score += 1.5 * sum(1 for sk in skills if sk in s.lower())
        score += 0.5 * len(wset & REQUIREMENT_WORDS)
        score -= 3.0 * len(wset & BOILERPLATE_WORDS)
        score -= 0.02 * i  # earlier sentences break ties: postings lead with what matters
        score /= math.sqrt(len(words)) / 3 + 1  # favour dense sentences over long ones
        out.append(score)
    return out


def boilerplate_hits(sentence: str) -> int:
    return len(set(re.findall(r"[a-z0-9]+", sentence.lower())) & BOILERPLATE_WORDS)


def select_greedy(
    sentences: list[str], scores: list[float], budget: int, count: Callable[[str], int] = approx_tokens
) -> list[int]:
    """Best-scoring sentences that fit ``budget`` (estimated tokens); indices in original order."""
    chosen: list[int] = []
    used = 0
    for i in sorted(range(len(sentences)), key=lambda i: (-scores[i], i)):
        if scores[i] == -math.inf or (scores[i] <= 0 and chosen):
            break
        cost = count(sentences[i])
        if used + cost > budget or any(sentences[j] == sentences[i] for j in chosen):
            continue  # over budget, or a verbatim repeat (templated postings repeat whole sentences)
        chosen.append(i)
        used += cost
    return sorted(chosen)


def select_mmr(
    sentences: list[str],
    relevance: list[float],
    sim: list[list[float]],
    budget: int,
    lam: float = 0.7,
    max_redundancy: float = 0.92,
    count: Callable[[str], int] = approx_tokens,
) -> list[int]:
    """Maximal marginal relevance under a token budget: relevance to the job, minus redundancy with what
    is already chosen (postings repeat themselves; a budget spent on paraphrases says less)."""
    n = len(sentences)
    costs = [count(s) for s in sentences]
    chosen: list[int] = []
    left = set(range(n))
    used = 0
    while left:
        best, best_v = -1, -math.inf
        for i in left:
            if used + costs[i] > budget or relevance[i] == -math.inf:
                continue
            red = max((sim[i][j] for j in chosen), default=0.0)
            if red >= max_redundancy:
                continue  # a (near-)duplicate of a chosen sentence adds nothing at any relevance
            v = lam * relevance[i] - (1 - lam) * red
            if v > best_v:
                best, best_v = i, v
        if best < 0 or (chosen and relevance[best] <= 0):
            break
        chosen.append(best)
        used += costs[best]
        left.discard(best)
    return sorted(chosen)


def summarize(p: JobPosted, budget_tokens: int = 128) -> Extracted:
    """Structured header + the best sentences that fit ``budget_tokens`` (estimated); keyword scoring."""
    seniority = detect_seniority(p.title, p.description)
    skills = detect_skills(f"{p.title}. {p.description}")
    header = header_fields(p, seniority, skills)
    sentences = split_sentences(p.description)
    chosen = select_greedy(
        sentences, heuristic_scores(sentences, p.title, skills), budget_tokens - approx_tokens(header) - 2
    )
    body = " ".join(sentences[i] for i in chosen)
    summary = header + (f"\nSummary: {body}" if body else "")
    return Extracted(
        summary=summary,
        raw_tokens=raw_tokens(p),
        summary_tokens=approx_tokens(summary),
        seniority=seniority,
        skills=skills,
    )


def raw_tokens(p: JobPosted, count: Callable[[str], int] = approx_tokens) -> int:
    return count(f"{p.title} {p.company} {p.location} {p.description}")

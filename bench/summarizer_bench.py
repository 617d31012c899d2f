"""Summarizer modes: compression, cost and scoring quality on compressed vs raw text.

    python bench/summarizer_bench.py [--n-queries 30] [--n-postings 40] [--modes extractive hybrid abstractive]

Writes a Markdown report (default ``bench/results/summarizer.md``); the texts, pairs and JSON results go to
``--state`` (``~/.cache/jobscore/bench/``), so ``--rescore sft`` can add a scorer later without re-summarizing.

Data
- Quality set: ESCO occupations (European Commission, CC BY 4.0), **reserved/held-out occupations only**
  (`compress.data.load_occupations("heldout")`; the filter is asserted here too). Queries are runs of
  title words as people type them, sometimes with a city, seniority or a description word; per query: the
  occupation's postings (positives) and other occupations (negatives, half sharing a query title word).
  ESCO descriptions are short (~80 words), so each posting is padded the way real postings are: an
  "about us" paragraph before the role description and benefits/EEO/how-to-apply boilerplate after it
  (sentences from `engine.corpus`), ~600-1,000 tokens in all.
- Cost and compression also on `engine.corpus.postings(n, paragraphs=8)` (~1,000-token generated postings).

Tokens are counted with SmolLM2's tokenizer (the scorer's). "raw" = header + description cut to
`--raw-max-tokens` tokens (what a raw-text fallback would send). Scorers, each reading the same texts:
the MiniLM bi-encoder (cosine; up to 512 tokens), SmolLM2-135M-Instruct zero-shot P(yes) through
`engine.engines.VllmEngine` with the worker's prompt, and the fine-tuned SmolLM2 if it exists.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from schemas import JobPosted

SFT_DIR = Path.home() / ".cache" / "jobscore" / "models" / "smollm2-135m-sft"
ALL_MODES = ("extractive", "hybrid", "abstractive")


def long_posting(p: JobPosted, rng: random.Random) -> JobPosted:
    """An ESCO posting padded with the non-role text real postings carry (about us, benefits, EEO)."""
    from engine.corpus import BOILERPLATE, DUTIES, INTROS

    generic = [d for d in DUTIES if "{" not in d]
    title = p.title
    about = [
        rng.choice(INTROS).format(company=p.company, title=title, location=p.location),
        f"{p.company} has grown quickly over the last years and now serves customers across several markets.",
        "Our teams value ownership, curiosity and a healthy work-life balance.",
    ]
    paras = [" ".join(about), p.description]
    for _ in range(6):
        paras.append(" ".join(rng.sample(generic, 2) + rng.sample(BOILERPLATE, 4)))
    return JobPosted(
        job_id=p.job_id, title=p.title, company=p.company, location=p.location, description="\n".join(paras)
    )


def raw_text(p: JobPosted, tok: Any, max_tokens: int) -> str:
    head = " | ".join(
        f"{k}: {v}" for k, v in (("Title", p.title), ("Company", p.company), ("Location", p.location)) if v
    )
    text = f"{head}\n{p.description}"
    ids = tok.encode(text, add_special_tokens=False)
    return text if len(ids) <= max_tokens else tok.decode(ids[:max_tokens])


def full_text(p: JobPosted) -> str:
    return f"{p.title} {p.company} {p.location} {p.description}"


def make_summarizer(mode: str, budget: int, embedder: Any, count: Any) -> Any:
    from summarizer.modes import AbstractiveSummarizer, ExtractiveSummarizer, HybridSummarizer

    if mode == "extractive":
        return ExtractiveSummarizer(budget, embedder, count=count)
    if mode == "extractive-keywords":
        return ExtractiveSummarizer(budget, None, count=count)
    if mode == "hybrid":
        return HybridSummarizer(budget, embedder, count=count)
    from summarizer.abstractive import VllmGenerator

    gen = VllmGenerator(max_input_tokens=1024, max_model_len=1536, max_num_seqs=32)
    return AbstractiveSummarizer(budget, gen, count=count)


def timed_summaries(summ: Any, items: Sequence[JobPosted], batch: int = 32) -> tuple[list[str], float]:
    out: list[str] = []
    t0 = time.perf_counter()
    for i in range(0, len(items), batch):
        out += [e.summary for e in summ.summarize_batch(items[i : i + batch])]
    return out, time.perf_counter() - t0


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / max(1, len(xs))


def bi_encoder_scores(enc: Any, queries: Sequence[str], docs: Sequence[str]) -> list[float]:
    import numpy as np

    qv = enc.encode(list(queries))
    dv = enc.encode(list(docs))
    return [float(x) for x in np.sum(qv * dv, axis=1)]


def slm_scorer(model_dir: Path) -> tuple[Any, Callable[[Sequence[str], Sequence[str]], list[float]]]:
    from engine.engines import VllmEngine
    from engine.prompt import PromptTemplate

    eng = VllmEngine(model_dir, dtype="bfloat16", max_model_len=1280, max_num_seqs=64)
    tmpl = PromptTemplate.qwen3_reranker()

    def score(queries: Sequence[str], docs: Sequence[str]) -> list[float]:
        # Sorted by query so shared prefixes sit together in a batch (prefix caching).
        order = sorted(range(len(queries)), key=lambda i: queries[i])
        s = eng.score([tmpl.render(queries[i], docs[i]) for i in order])
        out = [0.0] * len(queries)
        for k, i in enumerate(order):
            out[i] = s[k]
        return out

    return eng, score


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-queries", type=int, default=30)
    ap.add_argument("--n-postings", type=int, default=40, help="generated ~1,000-token postings for cost")
    ap.add_argument("--budget", type=int, default=128)
    ap.add_argument("--raw-max-tokens", type=int, default=1024)
    ap.add_argument("--modes", nargs="*", default=list(ALL_MODES))
    ap.add_argument("--skip-vllm-scorer", action="store_true")
    ap.add_argument("--estimate-budget", action="store_true", help="count the budget with the ~1.3/word estimate")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="bench/results/summarizer.md")
    ap.add_argument(
        "--state",
        default=str(Path.home() / ".cache" / "jobscore" / "bench" / "summarizer_state.json"),
        help="texts, pairs and results of the last run (lets --rescore add a scorer without re-summarizing)",
    )
    ap.add_argument(
        "--rescore",
        nargs="*",
        choices=("minilm", "zeroshot", "sft"),
        default=None,
        help="reuse --state: score its texts with these scorers only, merge into its results, rewrite the report",
    )
    a = ap.parse_args(argv)
    if a.rescore is not None:
        return rescore(a)

    from transformers import AutoTokenizer

    from compress.data import generate, load_occupations, reserved_ids
    from compress.metrics import evaluate_scores
    from engine.corpus import postings as gen_postings
    from engine.models import smollm2_dir
    from summarizer.embed import MiniLM
    from summarizer.extractive import approx_tokens
    from summarizer.modes import hf_token_counter

    t_start = time.time()
    tok = AutoTokenizer.from_pretrained(str(smollm2_dir()))
    occs = load_occupations("heldout")
    reserved = reserved_ids()
    assert occs and all(o.id in reserved for o in occs), "evaluation must use reserved occupations only"
    esco_all, pairs = generate(occs, a.n_queries, hard_negatives=3, random_negatives=3, seed=a.seed)
    rng = random.Random(a.seed)
    used = sorted({p.job_id for p in pairs})
    esco = [long_posting(esco_all[j], rng) for j in used]
    corpus = gen_postings(a.n_postings, seed=a.seed, paragraphs=8)
    print(f"{len(pairs)} pairs, {len(esco)} ESCO postings, {len(corpus)} generated postings", flush=True)

    def ntok(texts: Sequence[str]) -> list[int]:
        return [len(x) for x in tok(list(texts), add_special_tokens=False)["input_ids"]]

    texts: dict[str, dict[str, str]] = {"raw": {p.job_id: raw_text(p, tok, a.raw_max_tokens) for p in esco}}
    rows: list[dict[str, Any]] = []
    raw_esco = ntok([full_text(p) for p in esco])
    raw_corpus = ntok([full_text(p) for p in corpus])
    rows.append(
        {
            "mode": "raw",
            "esco_in": mean(raw_esco),
            "esco_out": mean(ntok(list(texts["raw"].values()))),
            "corpus_in": mean(raw_corpus),
            "corpus_out": mean(raw_corpus),
            "pps_esco": None,
            "pps_corpus": None,
        }
    )
    embedder = MiniLM()
    # Budget counted exactly with the scorer's tokenizer (the `budget_tokenizer` setting), unless asked not to.
    count = approx_tokens if a.estimate_budget else hf_token_counter(smollm2_dir())
    modes = list(a.modes)
    if "extractive" in modes:
        modes.insert(modes.index("extractive") + 1, "extractive-keywords")
    for mode in modes:
        print(f"summarizing: {mode}", flush=True)
        t0 = time.perf_counter()
        summ = make_summarizer(mode, a.budget, embedder, count)
        load_s = time.perf_counter() - t0
        summ.summarize_batch(corpus[:2])  # warm-up (first-call allocations, compiled graphs)
        if hasattr(embedder, "_cache"):
            embedder._cache.clear()  # measure cold: no sentence embeddings carried over between modes
        n_corpus = len(corpus) if mode != "abstractive" else min(len(corpus), 16)
        s_esco, dt_esco = timed_summaries(summ, esco)
        s_corpus, dt_corpus = timed_summaries(summ, corpus[:n_corpus])
        summ.close()
        texts[mode] = dict(zip([p.job_id for p in esco], s_esco, strict=True))
        out_esco, out_corpus = ntok(s_esco), ntok(s_corpus)
        rows.append(
            {
                "mode": mode,
                "esco_in": mean(raw_esco),
                "esco_out": mean(out_esco),
                "esco_max_out": max(out_esco),
                "corpus_in": mean(raw_corpus[:n_corpus]),
                "corpus_out": mean(out_corpus),
                "ratio_esco": mean([r / max(1, s) for r, s in zip(raw_esco, out_esco, strict=True)]),
                "ratio_corpus": mean([r / max(1, s) for r, s in zip(raw_corpus, out_corpus, strict=False)]),
                "pps_esco": len(esco) / dt_esco,
                "pps_corpus": n_corpus / dt_corpus,
                "load_s": load_s,
                "example": s_esco[0],
            }
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "example"}), flush=True)

    # --- quality: the same scorer on each text variant -------------------------------------------
    queries = [p.query for p in pairs]
    quality: list[dict[str, Any]] = []
    scorer_mini = MiniLM(max_length=512, cache_size=0)
    for variant, docs in texts.items():
        t0 = time.perf_counter()
        s = bi_encoder_scores(scorer_mini, queries, [docs[p.job_id] for p in pairs])
        quality.append(
            {
                "scorer": "MiniLM-L6 bi-encoder",
                "text": variant,
                **evaluate_scores(pairs, s),
                "items_per_s": len(pairs) / (time.perf_counter() - t0),
            }
        )
        print(json.dumps(quality[-1]), flush=True)
    slm_models: list[tuple[str, Path]] = []
    if not a.skip_vllm_scorer:
        slm_models.append(("SmolLM2-135M zero-shot (vLLM)", smollm2_dir()))
        if (SFT_DIR / "config.json").exists():
            slm_models.append(("SmolLM2-135M SFT (vLLM)", SFT_DIR))
        else:
            print(f"no fine-tuned model at {SFT_DIR}: skipped", flush=True)
    for name, model_dir in slm_models:
        eng, score = slm_scorer(model_dir)
        try:
            for variant, docs in texts.items():
                t0 = time.perf_counter()
                s = score(queries, [docs[p.job_id] for p in pairs])
                quality.append(
                    {
                        "scorer": name,
                        "text": variant,
                        **evaluate_scores(pairs, s),
                        "items_per_s": len(pairs) / (time.perf_counter() - t0),
                    }
                )
                print(json.dumps(quality[-1]), flush=True)
        finally:
            eng.close()

    from dataclasses import asdict

    state = Path(a.state)
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(
        json.dumps(
            {
                "texts": texts,
                "pairs": [asdict(p) for p in pairs],
                "rows": rows,
                "quality": quality,
                "args": vars(a),
                "n_esco": len(esco),
                "wall_s": time.time() - t_start,
            }
        )
    )
    write_outputs(a, rows, quality, len(pairs), len(esco), time.time() - t_start)
    return 0


def write_outputs(
    a: argparse.Namespace,
    rows: list[dict[str, Any]],
    quality: list[dict[str, Any]],
    n_pairs: int,
    n_esco: int,
    wall_s: float,
) -> None:
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Machine-readable results go beside the state (bench/results/ holds only the Markdown report).
    Path(a.state).with_name("summarizer_results.json").write_text(
        json.dumps({"compression": rows, "quality": quality, "args": vars(a)}, indent=2)
    )
    sft = any("SFT" in q["scorer"] for q in quality)
    out.write_text(render_report(rows, quality, a, n_pairs, n_esco, wall_s, sft))
    print(f"wrote {out}", flush=True)


def rescore(a: argparse.Namespace) -> int:
    """Score the saved texts with the chosen scorers; replace those scorers' rows in the saved results."""
    from compress.data import Pair
    from compress.metrics import evaluate_scores
    from engine.models import smollm2_dir
    from summarizer.embed import MiniLM

    st = json.loads(Path(a.state).read_text())
    pairs = [Pair(**p) for p in st["pairs"]]
    texts: dict[str, dict[str, str]] = st["texts"]
    queries = [p.query for p in pairs]
    names = {
        "minilm": "MiniLM-L6 bi-encoder",
        "zeroshot": "SmolLM2-135M zero-shot (vLLM)",
        "sft": "SmolLM2-135M SFT (vLLM)",
    }
    new: list[dict[str, Any]] = []
    for which in a.rescore:
        eng: Any = None
        if which == "minilm":
            enc = MiniLM(max_length=512, cache_size=0)

            def score(qs: Sequence[str], ds: Sequence[str], enc: Any = enc) -> list[float]:
                return bi_encoder_scores(enc, qs, ds)

        else:
            model_dir = smollm2_dir() if which == "zeroshot" else SFT_DIR
            if not (model_dir / "config.json").exists():
                print(f"no model at {model_dir}: {which} skipped", flush=True)
                continue
            eng, score = slm_scorer(model_dir)
        try:
            for variant, docs in texts.items():
                t0 = time.perf_counter()
                s = score(queries, [docs[p.job_id] for p in pairs])
                new.append(
                    {
                        "scorer": names[which],
                        "text": variant,
                        **evaluate_scores(pairs, s),
                        "items_per_s": len(pairs) / (time.perf_counter() - t0),
                    }
                )
                print(json.dumps(new[-1]), flush=True)
        finally:
            if eng is not None:
                eng.close()
    done = {q["scorer"] for q in new}
    quality = [q for q in st["quality"] if q["scorer"] not in done] + new
    st["quality"] = quality
    Path(a.state).write_text(json.dumps(st))
    prev = argparse.Namespace(**{**st["args"], "out": a.out})
    write_outputs(prev, st["rows"], quality, len(pairs), st["n_esco"], st["wall_s"])
    return 0


def render_report(
    rows: list[dict[str, Any]],
    quality: list[dict[str, Any]],
    a: argparse.Namespace,
    n_pairs: int,
    n_esco: int,
    wall_s: float,
    sft: bool,
) -> str:
    def f(x: Any, nd: int = 1) -> str:
        return "—" if x is None else f"{x:.{nd}f}"

    lines = [
        "# Summarizer modes: compression, cost, scoring quality",
        "",
        f"Machine: 2 shared CPU cores (other jobs running), no GPU. Budget {a.budget} tokens "
        + ("(estimated, ~1.3/word). " if a.estimate_budget else "(counted exactly with SmolLM2's tokenizer). ")
        + f"Generated by `bench/summarizer_bench.py` in {wall_s / 60:.0f} min "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). Tokens counted with SmolLM2's tokenizer.",
        "",
        "## Compression and cost",
        "",
        f"ESCO held-out postings (n={n_esco}, padded to real-posting length) and generated ~1,000-token "
        f"postings (n={a.n_postings}; abstractive: 16). Ratio = mean over postings of raw/summary tokens. "
        "postings/s = summarize_batch throughput in batches of 32, one process, after warm-up, sentence-embedding "
        "cache cleared per mode.",
        "",
        "| mode | ESCO raw tok | ESCO summary tok (max) | ESCO ratio | ESCO postings/s | generated raw tok "
        "| generated summary tok | generated ratio | generated postings/s | model load s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["mode"] == "raw":
            lines.append(
                f"| raw (cut to {a.raw_max_tokens} tok) | {f(r['esco_in'], 0)} | {f(r['esco_out'], 0)} | 1.0 | — "
                f"| {f(r['corpus_in'], 0)} | {f(r['corpus_out'], 0)} | 1.0 | — | — |"
            )
            continue
        lines.append(
            f"| {r['mode']} | {f(r['esco_in'], 0)} | {f(r['esco_out'], 0)} ({r['esco_max_out']}) "
            f"| {f(r['ratio_esco'])}x "
            f"| {f(r['pps_esco'], 2)} | {f(r['corpus_in'], 0)} | {f(r['corpus_out'], 0)} | {f(r['ratio_corpus'])}x "
            f"| {f(r['pps_corpus'], 2)} | {f(r['load_s'])} |"
        )
    lines += [
        "",
        "## Scoring quality on compressed vs raw text (same scorer, same pairs)",
        "",
        f"{n_pairs} labelled pairs from {a.n_queries} queries over reserved ESCO occupations only (positives: the "
        "occupation's postings; negatives: 3 sharing a query title word + 3 random per query). AUC over all "
        "pairs, NDCG@10 and MRR per query (averaged). items/s = scorer throughput on this CPU.",
        "",
        "| scorer | text | AUC | NDCG@10 | MRR | items/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for q in quality:
        lines.append(
            f"| {q['scorer']} | {q['text']} | {q['auc']:.3f} | {q['ndcg@10']:.3f} | {q['mrr']:.3f} "
            f"| {q['items_per_s']:.1f} |"
        )
    if not sft:
        lines += ["", f"No fine-tuned model at `{SFT_DIR}` when this ran: scorer (c) not measured."]
    lines += ["", "<!-- findings -->"]
    lines += ["", "## Example summaries (first ESCO posting)", ""]
    for r in rows:
        if "example" in r:
            lines += [f"**{r['mode']}**", "", "```", r["example"], "```", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())

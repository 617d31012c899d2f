"""Throughput of several model directories on the same prompts through the worker's engine — e.g. a
pruned student against its unpruned teacher (what pruning buys in items/s).

Every model is loaded once; then ``rounds`` rounds score the same token prompts with each model in turn
(the order rotates from round to round), each from an empty prefix cache. Ratios are taken within a round
(against the first model) and the median round is reported, so the drift of a shared host between rounds
cancels out.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class ModelsResult:
    models: list[str]
    prompts: int
    mean_prompt_tokens: float
    rounds: list[list[float]]  # items/s, one list per round, in ``models`` order

    def median_items_s(self) -> list[float]:
        return [statistics.median(r[i] for r in self.rounds) for i in range(len(self.models))]

    def median_ratios(self) -> list[float]:
        """Per model: the median over rounds of (its items/s / the first model's items/s in that round)."""
        return [statistics.median(r[i] / r[0] for r in self.rounds) for i in range(len(self.models))]

    def row(self) -> dict[str, Any]:
        return {
            "models": self.models,
            "prompts": self.prompts,
            "mean_prompt_tokens": self.mean_prompt_tokens,
            "rounds_items_s": [[round(x, 2) for x in r] for r in self.rounds],
            "median_items_s": [round(x, 2) for x in self.median_items_s()],
            "median_ratio_to_first": [round(x, 3) for x in self.median_ratios()],
        }

    def table(self) -> str:
        lines = ["| model | items/s (median round) | ratio to first (paired, median) |", "|---|---:|---:|"]
        for name, v, r in zip(self.models, self.median_items_s(), self.median_ratios(), strict=True):
            lines.append(f"| {name} | {v:.2f} | {r:.2f}x |")
        return "\n".join(lines)


def run_models(
    models: list[Path],
    *,
    n_prompts: int,
    rounds: int,
    summary_tokens: int = 128,
    dtype: str = "float32",
    max_model_len: int = 1024,
    batch_items: int = 512,
    batch_tokens: int = 16_384,
    corpus: str = "generated",
) -> ModelsResult:
    from bench.worker_bench import _prompts, batch_cuts, make_workload
    from engine.engines import VllmEngine
    from engine.prompt import PromptBuilder, PromptTemplate

    engines = [VllmEngine(m, dtype=dtype, max_model_len=max_model_len) for m in models]
    try:
        tok = engines[0].tokenizer
        candidates = 16
        requests = max(1, -(-n_prompts // candidates))
        wl = make_workload(tok, requests, candidates, requests * candidates, summary_tokens, 0, corpus=corpus)
        builder = PromptBuilder(
            tok, PromptTemplate.qwen3_reranker(), max_model_len=max_model_len, max_doc_tokens=summary_tokens + 64
        )
        prompts = _prompts(builder, wl, wl.summaries)[:n_prompts]
        cuts = batch_cuts(prompts, batch_items, batch_tokens)
        for e in engines:  # warm-up: first calls pay one-off costs
            e.score_tokens(prompts[: min(len(prompts), 16)])
        out: list[list[float]] = []
        for r in range(rounds):
            row = [0.0] * len(engines)
            # Each round starts at the next model, so a position effect (the first run of a round slower, say)
            # falls on every model in turn instead of on one.
            for i in [(r + k) % len(engines) for k in range(len(engines))]:
                e = engines[i]
                e.reset_prefix_cache()
                gc.collect()
                t0 = time.perf_counter()
                for c in cuts:
                    e.score_tokens(c)
                row[i] = len(prompts) / (time.perf_counter() - t0)
            rates = ", ".join(f"{m.name} {v:.2f} items/s" for m, v in zip(models, row, strict=True))
            print(f"round: {rates}", flush=True)
            out.append(row)
        return ModelsResult(
            [str(m) for m in models], len(prompts), round(statistics.mean(len(p) for p in prompts), 1), out
        )
    finally:
        for e in engines:
            e.close()

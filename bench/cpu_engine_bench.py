"""vLLM's CPU backend: stock environment vs the engine's defaults (engine/engines.py `cpu_backend_defaults`).

Each run is a fresh process (vLLM reads these variables when it starts its processes, and binds its threads to
cores then): it builds the worker's compiled engine on the model, times it to ready, then scores the same
prompts and reports items/s. Runs alternate stock / ours, so a shared host's drift hits both; the first of
each may pay a cold compile cache, so each is started ``rounds`` times and every start is reported.

- stock: ``VLLM_USE_AOT_COMPILE=1`` (vLLM's default with this torch) and one core kept for the scheduler;
- ours: what `VllmEngine` sets unless the environment says otherwise.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# vLLM's own choices, set explicitly so `VllmEngine` leaves them: its AOT cache (the default with this torch) and
# one core kept for the scheduler (its reservation on x86 with one engine process).
STOCK = {"VLLM_USE_AOT_COMPILE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "1"}


@dataclass
class Start:
    config: str
    ready_s: float
    items_s: float
    reserved_cpus: str


@dataclass
class CpuEngineResult:
    model: str
    prompts: int
    cpus: int
    starts: list[Start] = field(default_factory=list)

    def _of(self, config: str) -> list[Start]:
        return [s for s in self.starts if s.config == config]

    def summary(self) -> dict[str, Any]:
        stock, ours = self._of("stock"), self._of("ours")
        warm_ours = ours[1:] or ours  # the first start of ours may fill a cold cache
        return {
            "stock_ready_s_median": statistics.median(s.ready_s for s in stock),
            "ours_ready_s_warm_median": statistics.median(s.ready_s for s in warm_ours),
            "ours_ready_s_first": ours[0].ready_s,
            "stock_items_s_median": statistics.median(s.items_s for s in stock),
            "ours_items_s_median": statistics.median(s.items_s for s in ours),
            "items_s_ratio": statistics.median(s.items_s for s in ours) / statistics.median(s.items_s for s in stock),
            "ready_s_ratio_warm": statistics.median(s.ready_s for s in stock)
            / statistics.median(s.ready_s for s in warm_ours),
        }

    def row(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary()}

    def table(self) -> str:
        lines = ["| start | config | reserved cpus | s to ready | items/s |", "|---:|---|---|---:|---:|"]
        for i, s in enumerate(self.starts, 1):
            lines.append(f"| {i} | {s.config} | {s.reserved_cpus} | {s.ready_s:.1f} | {s.items_s:.2f} |")
        m = self.summary()
        lines.append(
            f"\nready: stock {m['stock_ready_s_median']:.1f} s vs ours {m['ours_ready_s_warm_median']:.1f} s on a "
            f"warm cache ({m['ready_s_ratio_warm']:.2f}x; ours' first start {m['ours_ready_s_first']:.1f} s); "
            f"items/s: {m['stock_items_s_median']:.2f} → {m['ours_items_s_median']:.2f} ({m['items_s_ratio']:.2f}x)"
        )
        return "\n".join(lines)


def _prompts(n: int, corpus: str = "generated") -> list[str]:
    """``n`` prompts; the generated texts are cut at 600 characters (what this benchmark measured from the start),
    real ESCO texts are whole."""
    from bench.corpora import job_postings

    cut = 600 if corpus == "generated" else None
    return [f"query: registered nurse\njob: {p.title}. {p.description[:cut]}" for p in job_postings(corpus, n, seed=3)]


def child(model: str, n_prompts: int, max_model_len: int, corpus: str = "generated") -> None:
    """One start: build the engine, time it, score, print one JSON line."""
    from engine.engines import VllmEngine

    t0 = time.monotonic()
    engine = VllmEngine(model, dtype="float32", max_model_len=max_model_len)
    ready_s = time.monotonic() - t0
    prompts = _prompts(n_prompts, corpus)
    engine.score(prompts[:8])  # first call's one-off costs stay out of the rate
    t0 = time.monotonic()
    engine.score(prompts)
    items_s = len(prompts) / (time.monotonic() - t0)
    engine.close()
    print("RESULT " + json.dumps({"ready_s": ready_s, "items_s": items_s}), flush=True)


def run(
    model: Path, *, n_prompts: int = 120, rounds: int = 2, max_model_len: int = 2048, corpus: str = "generated"
) -> CpuEngineResult:
    result = CpuEngineResult(model=str(model), prompts=n_prompts, cpus=len(os.sched_getaffinity(0)))
    root = Path(__file__).resolve().parents[1]
    for _ in range(rounds):
        for config in ("stock", "ours"):
            env = {**os.environ, "PYTHONPATH": str(root), "VLLM_LOGGING_LEVEL": "INFO"}
            for key in STOCK:
                env.pop(key, None)
            if config == "stock":
                env.update(STOCK)
            p = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.cpu_engine_bench",
                    str(model),
                    str(n_prompts),
                    str(max_model_len),
                    corpus,
                ],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            out = p.stdout + p.stderr
            line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
            if p.returncode != 0 or line is None:
                raise RuntimeError(f"the {config} start failed (exit {p.returncode}):\n{out[-3000:]}")
            reserved = next((x.split("reserved_cpus=")[1] for x in out.splitlines() if "reserved_cpus=" in x), "?")
            r = json.loads(line.split(" ", 1)[1])
            result.starts.append(Start(config, round(r["ready_s"], 1), round(r["items_s"], 2), reserved.strip()))
            print(f"[bench-cpu-engine] {result.starts[-1]}", flush=True)
    return result


if __name__ == "__main__":
    child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:5])

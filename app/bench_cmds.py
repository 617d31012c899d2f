"""``jobscore bench``: the worker benchmark (raw engine vs pipeline vs naive HF, prefix reuse, raw text)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from app.commands import AddCommand, S, command_settings
from bench.corpora import CORPUS_HELP as ALL_CORPORA_HELP
from compress.postings import CORPORA
from jobscore.settings import ToolSettings, WorkerSettings

CORPUS_HELP = (
    "job texts: 'postings' (realistic-length postings around real ESCO text, ~900 tokens) or 'esco-short' (bare "
    "ESCO descriptions, ~80 words)"
)


def _bench_settings(ns: argparse.Namespace, model: type[S], kvcache_gb: int) -> S:
    """Benchmarks print their own report: library logs only from WARNING (unless asked), and vLLM's CPU
    KV cache sized for the run unless the environment says otherwise."""
    s = command_settings(ns, model, quiet=True)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kvcache_gb))
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    return s


def _write_json(path: str | None, doc: Any) -> None:
    """``--json PATH``: the report as JSON too (nothing without the flag)."""
    if path:
        with open(path, "w") as f:
            json.dump(doc, f, indent=2)


def cmd_bench(ns: argparse.Namespace) -> int:
    from bench.worker_bench import print_report, run

    s = _bench_settings(ns, WorkerSettings, 4)
    ns.use_given_broker = "s_kafka_bootstrap" in {k for k, v in vars(ns).items() if v is not None} or bool(
        os.environ.get("JOBSCORE_KAFKA_BOOTSTRAP")
    )
    r = run(ns, s)
    print_report(r)
    _write_json(ns.json, r)
    return 0


def cmd_bench_models(ns: argparse.Namespace) -> int:

    from bench.models_bench import run_models

    cache = _bench_settings(ns, ToolSettings, 2).cache_dir
    from engine.factory import resolve_model

    r = run_models(
        [resolve_model(m, cache) for m in ns.models],
        n_prompts=ns.prompts,
        rounds=ns.rounds,
        summary_tokens=ns.summary_tokens,
        dtype=ns.dtype,
        max_model_len=ns.max_model_len,
        batch_items=ns.batch_items,
        batch_tokens=ns.batch_tokens,
        corpus=ns.corpus,
    )
    print(f"\n{r.prompts} prompts, mean {r.mean_prompt_tokens} tokens, {len(r.rounds)} rounds\n")
    print(r.table())
    _write_json(ns.json, r.row())
    return 0


def cmd_bench_cpu_engine(ns: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.cpu_engine_bench import run
    from engine.factory import resolve_model

    s = _bench_settings(ns, ToolSettings, 2)
    model = Path(resolve_model(ns.model, s.cache_dir))
    r = run(model, n_prompts=ns.prompts, rounds=ns.rounds, max_model_len=ns.max_model_len, corpus=ns.corpus)
    print(f"\n{model.name}: {r.prompts} prompts, {r.cpus} CPUs\n")
    print(r.table())
    _write_json(ns.json, r.row())
    return 0


def cmd_bench_headline(ns: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.headline import print_headline, run_headline
    from engine.factory import resolve_model

    s = _bench_settings(ns, ToolSettings, 2)
    scorer = resolve_model(ns.scorer, s.cache_dir)
    pruned = None if ns.pruned == "none" else resolve_model(ns.pruned, s.cache_dir)
    r = run_headline(
        scorer,
        pruned=Path(pruned) if pruned else None,
        corpus=ns.corpus,
        queries=ns.queries,
        rounds=ns.rounds,
        hf_batch_size=ns.hf_batch_size,
        max_raw_tokens=ns.max_raw_tokens,
        dtype=ns.dtype,
        kv_block_size=ns.kv_block_size,
    )
    print_headline(r)
    _write_json(ns.json, r)
    return 0


def cmd_bench_soak(ns: argparse.Namespace) -> int:
    from bench.soak import run as run_soak

    s = _bench_settings(ns, WorkerSettings, 1)  # the tiny model needs little KV cache; the host is shared
    given = "s_kafka_bootstrap" in {k for k, v in vars(ns).items() if v is not None} or bool(
        os.environ.get("JOBSCORE_KAFKA_BOOTSTRAP")
    )
    if s.model is None and s.dtype == "auto":
        s = s.model_copy(update={"dtype": "float32"})  # the tiny model on a CPU without bf16 kernels
    rate = None if ns.rate == "auto" else float(ns.rate)
    rep = run_soak(s, rate, ns.minutes, ns.candidates, ns.workers, ns.sample_s, given, ns.json, corpus=ns.corpus)
    return 1 if rep.ledger.get("lost", 0) else 0


def register(sub: Any, add: AddCommand) -> None:
    p = add(
        "bench-soak",
        cmd_bench_soak,
        "Load and soak: a steady request rate through broker -> worker process(es) -> rankings for N minutes on "
        "loopback (the embedded stack unless a broker is given), reporting throughput, p50/p99 latency, RSS of "
        "each worker process and its engine processes over time (growth = a leak), and the ledger of the run "
        "(exit code 1 if anything was lost).",
        WorkerSettings,
    )
    p.add_argument(
        "--rate",
        default="auto",
        help="Requests per second, or 'auto': measure capacity with a burst first and run at 70%% of it.",
    )
    p.add_argument("--minutes", type=float, default=10.0, help="How long the steady rate runs.")
    p.add_argument("--candidates", type=int, default=20, help="Candidates per request.")
    p.add_argument("--workers", type=int, default=1, help="Worker processes.")
    p.add_argument("--sample-s", type=float, default=15.0, help="Seconds between samples of rate, latency and RSS.")
    p.add_argument("--corpus", choices=("generated", *CORPORA), default="generated", help=ALL_CORPORA_HELP)
    p.add_argument("--json", default=None, help="Also write the report (with the time series) here.")
    p = add(
        "bench-headline",
        cmd_bench_headline,
        "The paper's headline in one run: the naive baseline (HF transformers, raw descriptions, padded "
        "batches) vs the full system (cached summaries, vLLM, the worker's batching, prefix reuse, optionally "
        "the pruned scorer) on the same reserved-occupation pairs; items/s and quality per lever, and the "
        "all-together speedup.",
        ToolSettings,
    )
    p.add_argument(
        "--scorer", default="scorer-full", help="the unpruned scorer: a directory or name (default: scorer-full)"
    )
    p.add_argument(
        "--pruned",
        default="scorer-pruned",
        help="the pruned scorer for the last step: a directory or name (default: the shipped scorer-pruned; "
        "'none' skips the step)",
    )
    p.add_argument("--corpus", choices=CORPORA, default="postings", help=CORPUS_HELP)
    p.add_argument("--queries", type=int, default=40, help="reserved-occupation queries (~6 pairs each)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every step, the order reversed every other round")
    p.add_argument("--hf-batch-size", type=int, default=16)
    p.add_argument(
        "--max-raw-tokens",
        type=int,
        default=None,
        help="cut raw postings to this many tokens for the naive step (default: not cut; the report says which)",
    )
    p.add_argument(
        "--kv-block-size",
        type=int,
        default=None,
        help="vLLM KV block size for the vLLM steps (default: the platform's, as the worker: 32 on CPU)",
    )
    p.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"], help="both engines' dtype (bfloat16 on a GPU)"
    )
    p.add_argument("--json", default=None, help="Also write the results here.")
    p = add(
        "bench-cpu-engine",
        cmd_bench_cpu_engine,
        "vLLM's CPU backend as vLLM sets it up (AOT compile cache, one core kept for the scheduler) vs the "
        "engine's defaults (VLLM_USE_AOT_COMPILE=0; no core kept on hosts with 2 CPUs or fewer): seconds to a "
        "ready compiled engine and items/s, each start a fresh process, alternating.",
        ToolSettings,
    )
    p.add_argument("--model", default=None, help="model directory or name (default: the shipped scorer)")
    p.add_argument("--prompts", type=int, default=120)
    p.add_argument("--rounds", type=int, default=2, help="starts of each configuration")
    p.add_argument("--corpus", choices=("generated", *CORPORA), default="generated", help=ALL_CORPORA_HELP)
    p.add_argument("--max-model-len", type=int, default=WorkerSettings.model_fields["max_model_len"].default)
    p.add_argument("--json", default=None, help="Also write the results here.")
    p = add(
        "bench-models",
        cmd_bench_models,
        "Items/s of several model directories (e.g. pruned vs unpruned) on the same generated prompts through "
        "the worker's engine, in alternating rounds; prints each model's rate and its paired ratio to the first.",
        ToolSettings,
    )
    p.add_argument(
        "models", nargs="+", help="model dirs or names (scorer-full, scorer-pruned); ratios are against the first"
    )
    p.add_argument(
        "--corpus",
        choices=("generated", *CORPORA),
        default="generated",
        help="the summaries scored: of 'generated' texts, or of real ESCO text (" + CORPUS_HELP + ")",
    )
    p.add_argument("--dtype", default="float32", help="engine dtype (float32 on CPUs without bf16 support)")
    p.add_argument("--max-model-len", type=int, default=1024)
    worker = WorkerSettings.model_fields
    p.add_argument(
        "--batch-items",
        type=int,
        default=worker["max_batch_items"].default,
        help="pairs per engine call (default: the worker's)",
    )
    p.add_argument(
        "--batch-tokens",
        type=int,
        default=worker["max_batch_tokens"].default,
        help="tokens per engine call (default: the worker's)",
    )
    p.add_argument("--prompts", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--summary-tokens", type=int, default=128)
    p.add_argument("--json", default=None, help="Also write the results here.")
    p = add(
        "bench",
        cmd_bench,
        "Throughput benchmark on one generated workload: raw vLLM engine, the full pipeline (broker + Redis + "
        "worker), a naive HF transformers baseline, prefix caching on/off, query-first vs doc-first, and "
        "summary vs raw-description prompts. Prints items/s and ratios.",
        WorkerSettings,
    )
    p.add_argument("--config", choices=["small", "qwen3-0.6b"], default="small", help="Random-weight Qwen3 size.")
    p.add_argument(
        "--corpus",
        choices=("generated", *CORPORA),
        default="generated",
        help="job texts: 'generated' (synthetic, cut to --summary-tokens/--raw-tokens exactly), or real ESCO text: "
        + CORPUS_HELP.removeprefix("job texts: "),
    )
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--candidates", type=int, default=64, help="Candidates per request.")
    p.add_argument(
        "--jobs", type=int, default=0, help="Distinct postings (0: one per pair, so no doc is scored twice)."
    )
    p.add_argument("--summary-tokens", type=int, default=128)
    p.add_argument("--raw-tokens", type=int, default=1200)
    p.add_argument("--raw-items", type=int, default=256, help="Items scored for the raw-description rate.")
    p.add_argument("--hf-items", type=int, default=512, help="Items scored for the naive HF rate.")
    p.add_argument("--hf-batch-size", type=int, default=32)
    p.add_argument("--max-num-seqs", type=int, default=256, help="vLLM max_num_seqs.")
    p.add_argument("--max-num-batched-tokens", type=int, default=None, help="vLLM max_num_batched_tokens.")
    p.add_argument(
        "--pipeline-rounds", type=int, default=3, help="Paired rounds (raw engine run, then pipeline burst)."
    )
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--skip-pipeline", action="store_true")
    p.add_argument("--json", default=None, help="Also write the results here.")

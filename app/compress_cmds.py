"""``jobscore compress-*`` subcommands: data, size, prune, sft (and distillation), eval, pipeline."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from app.commands import AddCommand, command_settings
from compress.lora import ADAPTER_VERSION, DEFAULT_TARGETS
from compress.models import resolve_model_arg, scorer_dir
from compress.prune import DEFAULT_CALIBRATION_PROMPTS, METHODS
from compress.settings import CompressSettings


def _s(ns: argparse.Namespace) -> CompressSettings:
    return command_settings(ns, CompressSettings)


def cmd_pack_pruned(ns: argparse.Namespace) -> int:
    from compress.ship import pack_pruned

    _s(ns)
    unpruned = resolve_model_arg(ns.unpruned)
    identity = json.loads((unpruned / "jobscore_model.json").read_text())
    m = pack_pruned(
        unpruned,
        Path(ns.pruned),
        Path(ns.out),
        version=ns.version,
        parent_adapter=ns.parent_adapter or str(identity.get("revision")),
        extra={"command": shlex.split(ns.prune_command)} if ns.prune_command else None,
    )
    print(json.dumps({k: v for k, v in m.items() if k != "check"}, indent=2))
    return 0


def cmd_data(ns: argparse.Namespace) -> int:
    from compress.data import generate_split, write_jsonl

    s = _s(ns)
    postings, pairs = generate_split(ns.split, ns.queries, seed=s.seed)
    write_jsonl(Path(ns.out), postings, pairs)
    print(f"{len(pairs)} pairs ({sum(p.label > 0 for p in pairs)} relevant) over {ns.queries} queries → {ns.out}")
    return 0


def cmd_size(ns: argparse.Namespace) -> int:
    from compress.prune import PARAM_BASES, QWEN3_0_6B, count_params, keep_ratio_for

    cfg = (
        QWEN3_0_6B
        if ns.model == "qwen3-0.6b"
        else json.loads((resolve_model_arg(ns.model) / "config.json").read_text())
    )
    full = count_params(cfg)
    print(json.dumps({"params": full}, indent=2))
    if ns.keep_ratio is not None:
        width = round(ns.keep_ratio * cfg["intermediate_size"])
        print(json.dumps({"keep_ratio": ns.keep_ratio, "intermediate": width, "params": count_params(cfg, width)}))
    if ns.target is not None:
        for which in PARAM_BASES:
            print(f"{which} = {ns.target:,}: keep ratio {keep_ratio_for(cfg, ns.target, which):.4f}")
    return 0


def cmd_prune(ns: argparse.Namespace) -> int:
    from compress.prune import calibration_prompts, prune_model

    s = _s(ns)
    calibration = calibration_prompts(
        ns.calibration_prompts,
        seed=s.seed,
        max_doc_chars=s.max_doc_chars,
        outside_frac=ns.calibration_outside_frac,
    )
    report = prune_model(
        resolve_model_arg(ns.model),
        Path(ns.out),
        ns.keep_ratio,
        ns.method,
        calibration,
        max_len=s.max_len,
        threads=s.threads,
        multiple_of=ns.multiple_of,
    )
    print(json.dumps({k: v for k, v in report.to_json().items() if not k.startswith("layer_")}, indent=2))
    if report.layer_error:
        print(f"mean relative layer error: {sum(report.layer_error) / len(report.layer_error):.4f}")
    return 0


def cmd_sft(ns: argparse.Namespace) -> int:
    from compress.lora import lora_spec_for
    from compress.train import TrainConfig, distil_examples, make_examples, record_sft_output, sft_data, train

    s = _s(ns)
    data = sft_data(
        data=ns.data,
        queries=ns.queries,
        drop_title_frac=ns.drop_title_frac,
        hard_queries=ns.hard_queries,
        hard_candidates=ns.hard_candidates,
        outside_queries=ns.outside_queries,
        outside_candidates=ns.outside_candidates,
        seed=s.seed,
        max_doc_chars=s.max_doc_chars,
    )
    if ns.graded_targets:
        data.recipe["targets"] = "graded: P(yes) = grade / 2"
    if data.dropped:
        print(f"dropped {data.dropped} pairs on reserved evaluation occupations", file=sys.stderr)
    cfg = TrainConfig(
        lr=ns.lr,
        epochs=ns.epochs,
        batch_size=ns.batch_size,
        max_len=s.max_len,
        seed=s.seed,
        threads=s.threads,
        alpha=ns.alpha,
        save_every=ns.save_every,
    )
    ex = make_examples(
        data.pairs,
        data.postings,
        seed=s.seed,
        max_doc_chars=s.max_doc_chars,
        budget_tokens=s.summary_budget_tokens,
        summary_only=data.summary_only,
        graded=ns.graded_targets,
    )
    if ns.teacher:
        ex = distil_examples(resolve_model_arg(ns.teacher), ex, cfg)
    base = resolve_model_arg(ns.model)
    lora = (
        lora_spec_for(base, rank=ns.lora_rank, alpha=ns.lora_alpha, targets=ns.lora_targets, layers=ns.lora_layers)
        if ns.lora
        else None
    )
    out = train(
        base,
        ex,
        Path(ns.out),
        cfg,
        stop_after=ns.stop_after,
        lora=lora,
        grad_checkpointing=ns.grad_checkpointing,
        freeze_embeddings_norms=ns.freeze_embeddings_norms,
    )
    if out:
        record_sft_output(
            out,
            base,
            recipe=data.recipe,
            lora=lora,
            command=["jobscore", *sys.argv[1:]],
            adapter_version=ns.adapter_version,
        )
    print(f"saved {out}" if out else f"stopped after {ns.stop_after} steps; rerun to resume")
    return 0


def cmd_eval(ns: argparse.Namespace) -> int:
    from compress.data import heldout_data
    from compress.evaluate import (
        add_breakdown,
        add_differences,
        evaluate_baselines,
        evaluate_model,
        format_breakdown,
        format_table,
        write_json,
    )

    s = _s(ns)
    kinds: dict[str, str] = {}
    if ns.split == "outside" and not ns.data:
        from compress.outside import generate_outside_split

        postings, pairs, outside_kinds = generate_outside_split(ns.queries, seed=s.seed + 4)
        kinds = dict(outside_kinds)
    else:
        postings, pairs = heldout_data(Path(ns.data) if ns.data else None, ns.split, ns.queries, seed=s.seed)
    results = evaluate_baselines(
        pairs,
        postings,
        baselines=ns.baselines,
        modes=ns.modes,
        budget_tokens=s.summary_budget_tokens,
        max_doc_chars=s.max_doc_chars,
    )
    for m in ns.model:
        results += evaluate_model(
            scorer_dir(resolve_model_arg(m), ns.base),
            pairs,
            postings,
            modes=ns.modes,
            engine=s.engine,
            dtype=s.dtype,
            max_model_len=s.max_model_len,
            budget_tokens=s.summary_budget_tokens,
            max_doc_chars=s.max_doc_chars,
            name=Path(m).name,
        )
    if kinds:
        add_breakdown(results, pairs, kinds)
    names = [Path(m).name for m in ns.model]
    add_differences(results, pairs, of=names, against=[*ns.baselines, *names])
    print(format_table(results))
    if any("by_kind" in r.extra or "diff_ci95" in r.extra for r in results):
        print()
        print(format_breakdown(results))
    if ns.json:
        write_json(Path(ns.json), results)
    return 0


def cmd_merge(ns: argparse.Namespace) -> int:
    from compress.lora import merge_adapter

    _s(ns)
    out = merge_adapter(resolve_model_arg(ns.base), Path(ns.adapter), Path(ns.out), dtype=ns.merged_dtype)
    print(f"merged {ns.adapter} into {ns.base} → {out}")
    return 0


def cmd_extract_lora(ns: argparse.Namespace) -> int:
    from compress.lora import LoraSpec, extract_lora, write_extracted_manifest

    _s(ns)
    base, tuned, out = resolve_model_arg(ns.base), Path(ns.tuned), Path(ns.out)
    spec = LoraSpec(rank=ns.rank, alpha=float(ns.alpha if ns.alpha is not None else ns.rank))
    kept = extract_lora(base, tuned, out, spec)
    write_extracted_manifest(
        out, base, tuned, spec, kept, command=["jobscore", *sys.argv[1:]], version=ns.adapter_version
    )
    print(
        f"saved {out}: rank {spec.rank} keeps {kept['energy_kept']:.1%} of the change's energy "
        f"(worst matrix {kept['energy_kept_worst_matrix']:.1%})"
    )
    return 0


def cmd_pipeline(ns: argparse.Namespace) -> int:
    from compress.pipeline import PipelineConfig, run_pipeline
    from compress.train import TrainConfig

    s = _s(ns)
    shared = TrainConfig(max_len=s.max_len, seed=s.seed, threads=s.threads)  # the settings' part of both runs
    cfg = PipelineConfig(
        base=resolve_model_arg(ns.model),
        out=Path(ns.out),
        teacher=resolve_model_arg(ns.teacher) if ns.teacher else None,
        keep_ratio=ns.keep_ratio,
        methods=tuple(ns.methods),
        distil_methods=tuple(ns.distil_methods) if ns.distil_methods else None,
        calibration_prompts=ns.calibration_prompts,
        train_queries=ns.train_queries,
        distil_queries=ns.distil_queries,
        eval_queries=ns.eval_queries,
        sft=replace(shared, lr=ns.lr, epochs=ns.epochs),
        distil=replace(shared, lr=ns.distil_lr, epochs=ns.epochs, alpha=ns.distil_alpha),
        evaluate_base=ns.evaluate_base,
        export=Path(ns.export) if ns.export else None,
    )
    print(run_pipeline(cfg, s)["report"])
    return 0


def register(sub: Any, add: AddCommand) -> None:
    p = add(
        "compress-data",
        cmd_data,
        "Generate labelled query–job pairs from ESCO occupations (JSONL + postings "
        "JSONL). 'train' never holds a reserved evaluation occupation; 'heldout' holds only those.",
        CompressSettings,
    )
    p.add_argument("out", help="pairs JSONL to write (postings go to <name>.postings.jsonl beside it)")
    p.add_argument("--split", choices=["train", "heldout"], default="train")
    p.add_argument("--queries", type=int, default=200, help="queries; each has ~6 labelled jobs")

    p = add(
        "compress-size",
        cmd_size,
        "Parameter count of a model (or qwen3-0.6b) and the MLP keep ratio for a target size.",
        CompressSettings,
    )
    p.add_argument("model", help="model dir, 'smollm2', 'tiny' or 'qwen3-0.6b'")
    p.add_argument("--keep-ratio", type=float, default=None)
    p.add_argument("--target", type=int, default=None, help="target parameter count, e.g. 375000000")

    p = add(
        "compress-prune",
        cmd_prune,
        "Structured MLP pruning (OSSCAR local search + least-squares re-fit, or "
        "the magnitude/activation baselines) to a uniform width; saves an HF directory vLLM serves.",
        CompressSettings,
    )
    p.add_argument("model", help="model dir, 'smollm2' or 'tiny'")
    p.add_argument("out", help="output model directory")
    p.add_argument("--keep-ratio", type=float, default=0.75, help="fraction of MLP neurons kept per layer")
    p.add_argument("--method", choices=METHODS, default="osscar")
    p.add_argument(
        "--calibration-prompts", type=int, default=DEFAULT_CALIBRATION_PROMPTS, help="prompts from the train split"
    )
    p.add_argument(
        "--calibration-outside-frac",
        type=float,
        default=0.0,
        help="share of the calibration prompts in the outside split's shape (long postings read as summaries, "
        "train occupations); the rest are default-format raw prompts",
    )
    p.add_argument("--multiple-of", type=int, default=1, help="round the kept width up to a multiple of this")

    p = add(
        "compress-pack-pruned",
        cmd_pack_pruned,
        "Pack a pruned model (compress-prune output) as the files a pruned scorer ships as (engine/scorer_pruned): "
        "kept MLP neurons + re-fitted down projections in float16, a manifest with check scores of the model as "
        "rebuilt from those files.",
        CompressSettings,
    )
    p.add_argument("unpruned", help="the model it was pruned from: a dir or scorer-full")
    p.add_argument("pruned", help="the compress-prune output dir")
    p.add_argument("out", help="output dir (engine/scorer_pruned to ship it)")
    p.add_argument("--version", required=True, help="the pruned scorer's version, e.g. scorer-pruned-v1")
    p.add_argument("--parent-adapter", default=None, help="default: the unpruned model's revision")
    p.add_argument(
        "--prune-command",
        default=None,
        help="the compress-prune command line (one quoted string), kept in the manifest",
    )

    p = add(
        "compress-sft",
        cmd_sft,
        "Fine-tune a causal LM as a yes/no relevance classifier on the worker's "
        "prompt; with --teacher, distil the teacher's P(yes) instead. Resumable; reserved occupations dropped.",
        CompressSettings,
    )
    p.add_argument("model", help="model dir to start from, 'smollm2' or 'tiny'")
    p.add_argument("out", help="output model directory (checkpoints under out/checkpoint)")
    p.add_argument("--data", default=None, help="pairs JSONL; default: generate --queries from the train split")
    p.add_argument("--queries", type=int, default=128)
    p.add_argument("--teacher", default=None, help="teacher model dir: distil its P(yes) (soft labels)")
    p.add_argument("--alpha", type=float, default=1.0, help="distillation: weight of the teacher vs the hard label")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--save-every", type=int, default=10, help="checkpoint every N steps")
    p.add_argument("--stop-after", type=int, default=None, help="leave after N steps (resume later)")
    p.add_argument("--drop-title-frac", type=float, default=0.0, help="share of queries whose jobs lose the title line")
    p.add_argument(
        "--hard-queries",
        type=int,
        default=0,
        help="add hard-format queries (alt titles, no title, hard negatives)",
    )
    p.add_argument("--hard-candidates", type=int, default=6, help="jobs per hard-format query (1 relevant)")
    p.add_argument(
        "--outside-queries",
        type=int,
        default=0,
        help="add queries in the outside split's shape from the train occupations (alternative title, duty/skill, "
        "title + seniority/city/skill; long postings read as summaries; compress/outside.py)",
    )
    p.add_argument(
        "--outside-candidates", type=int, default=8, help="postings per outside-format query (2 relevant, graded 2/1)"
    )
    p.add_argument(
        "--graded-targets",
        action="store_true",
        help="learn P(yes) = grade / 2 (a partial match, e.g. the right job in the wrong city, at 0.5) instead of "
        "1 for every relevant grade",
    )
    p.add_argument(
        "--grad-checkpointing",
        action="store_true",
        help="recompute activations in backward: far less memory (batch 16: ~12 GB → a few), ~1.3x time",
    )
    p.add_argument(
        "--freeze-embeddings-norms",
        action="store_true",
        help="full fine-tune of the linear layers only (embeddings, tied LM head, norms frozen): the change is "
        "then all in weights compress-extract-lora can turn into an adapter",
    )
    p.add_argument("--lora", action="store_true", help="train a LoRA adapter (PEFT) instead of all weights")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument(
        "--lora-targets", nargs="+", default=list(DEFAULT_TARGETS), help="module names (default: every linear layer)"
    )
    p.add_argument(
        "--lora-layers",
        default="all",
        help="decoder layers that get LoRA: 'all', 'topN' (the last N), '22-29' or '0,5,7'. Only the top layers: "
        "backward stops at the lowest adapted one (cheap steps, little activation memory)",
    )
    p.add_argument(
        "--adapter-version",
        default=ADAPTER_VERSION,
        help="recorded in manifest.json, in the merged model's cache path and in every ranking: name each adapter",
    )

    p = add(
        "compress-eval",
        cmd_eval,
        "AUC, NDCG@10 and MRR on the held-out split (reserved occupations) for each "
        "model and context mode, scored by the worker's engine and prompt.",
        CompressSettings,
    )
    p.add_argument(
        "model", nargs="*", help="model or LoRA adapter dirs ('smollm2', 'tiny' allowed; adapters are merged first)"
    )
    p.add_argument("--data", default=None, help="pairs JSONL; default: generate --queries held-out queries")
    p.add_argument(
        "--split",
        choices=["default", "hard", "outside"],
        default="default",
        help="held-out split: 'default' (title-word queries, titled jobs, ~6 per query), 'hard' (alternative-"
        "title/paraphrase queries, description-only jobs, 20 per query with hard negatives) or 'outside' "
        "(alternative-title, duty/skill and title + seniority/city/skill queries in rotation against ~1,000-token "
        "postings, 20 per query with hard negatives; compress/outside.py). AUC and NDCG@10 come with 95%% "
        "bootstrap intervals over queries",
    )
    p.add_argument("--queries", type=int, default=40)
    p.add_argument("--modes", nargs="+", choices=["raw", "summary"], default=["raw", "summary"])
    p.add_argument(
        "--baselines", nargs="*", choices=["bm25", "minilm"], default=[], help="also score BM25 / the MiniLM bi-encoder"
    )
    p.add_argument("--base", default="smollm2", help="base model dir that adapters are merged into")
    p.add_argument("--json", default=None, help="write results here")

    p = add(
        "compress-merge",
        cmd_merge,
        "Merge a LoRA scorer adapter into its base: a plain HF directory (with jobscore_model.json) that "
        "vLLM serves unchanged. Refuses a base whose weights hash differs from the adapter's manifest.",
        CompressSettings,
    )
    p.add_argument("adapter", help="adapter dir (adapter_model.safetensors, adapter_config.json, manifest.json)")
    p.add_argument("out", help="output model directory")
    p.add_argument("--base", default="smollm2", help="base model dir, or 'smollm2' (the float32 conversion)")
    p.add_argument(
        "--merged-dtype", default=None, choices=["float32", "bfloat16", "float16"], help="default: the base's"
    )

    p = add(
        "compress-extract-lora",
        cmd_extract_lora,
        "A LoRA adapter from a full fine-tune: the truncated SVD of each linear layer's change (the best rank-r "
        "approximation), saved with its manifest like a trained adapter. Train the fine-tune with "
        "--freeze-embeddings-norms so the whole change is in the linears.",
        CompressSettings,
    )
    p.add_argument("tuned", help="the fine-tuned model dir (a compress-sft output of the same base)")
    p.add_argument("out", help="adapter dir to write")
    p.add_argument("--base", default="smollm2", help="base model dir, or 'smollm2' (the float32 conversion)")
    p.add_argument("--rank", type=int, default=16, help="LoRA rank (float16: ~0.6 MB per rank for SmolLM2-135M)")
    p.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default: the rank, scaling 1)")
    p.add_argument(
        "--adapter-version",
        default=ADAPTER_VERSION,
        help="recorded in manifest.json, in the merged model's cache path and in every ranking: name each adapter",
    )

    p = add(
        "compress-pipeline",
        cmd_pipeline,
        "prune → distil → evaluate (raw vs summary, pruned vs unpruned) → "
        "export, with a report; SFTs the teacher first unless --teacher is given. Stages resume.",
        CompressSettings,
    )
    p.add_argument("model", help="base model dir, 'smollm2' or 'tiny'")
    p.add_argument("out", help="working directory (data, models, eval.json, report.md)")
    p.add_argument("--teacher", default=None, help="an already fine-tuned model to prune and distil from")
    p.add_argument("--keep-ratio", type=float, default=0.75)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=["osscar", "magnitude"])
    p.add_argument(
        "--distil-methods",
        nargs="+",
        choices=METHODS,
        default=None,
        help="pruned students to distil (default: every --methods); the others are compared before fine-tuning",
    )
    p.add_argument(
        "--calibration-prompts",
        type=int,
        default=DEFAULT_CALIBRATION_PROMPTS,
        help="train-split prompts OSSCAR calibrates on",
    )
    p.add_argument("--train-queries", type=int, default=128)
    p.add_argument("--distil-queries", type=int, default=32, help="0 skips distillation")
    p.add_argument("--eval-queries", type=int, default=40)
    p.add_argument("--lr", type=float, default=2e-4, help="teacher SFT learning rate")
    # Measured on SmolLM2 (bench/RESULTS.md §3): distilling the pruned student at the SFT rate (2e-4) lost
    # AUC (0.914 → 0.882); 3e-5 recovered it (→ 0.938).
    p.add_argument("--distil-lr", type=float, default=3e-5, help="distillation learning rate (recovery: keep it low)")
    p.add_argument(
        "--distil-alpha",
        type=float,
        default=1.0,
        help="distillation target = alpha * teacher P(yes) + (1 - alpha) * hard label",
    )
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--evaluate-base", action="store_true", help="also evaluate the base model zero-shot")
    p.add_argument("--export", default=None, help="copy the OSSCAR student here")

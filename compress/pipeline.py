"""One command from a base model to a served, pruned relevance model, with a report:

    data (ESCO train split / reserved held-out split) → teacher SFT (unless given) → prune (OSSCAR and
    baselines, same width) → distil each pruned student from the teacher → evaluate every model on the
    held-out split, raw and summary context, through the worker's engine → export → report.md + eval.json

Every stage writes into ``out`` and is skipped when its output is already there, so an interrupted run
resumes (training itself also resumes from its checkpoint).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compress.data import drop_reserved, generate_split, load_pairs, write_jsonl
from compress.evaluate import CONTEXT_MODES, EvalResult, build_prompts, evaluate_model, format_table, write_json
from compress.prune import DEFAULT_CALIBRATION_PROMPTS, Method, count_params, prune_model
from compress.settings import CompressSettings
from compress.train import Example, TrainConfig, distil_examples, make_examples, train

log = logging.getLogger(__name__)


@dataclass
class PipelineConfig:
    base: Path
    out: Path
    teacher: Path | None = None  # an SFT'd model; None: fine-tune ``base`` first
    keep_ratio: float = 0.75
    methods: Sequence[Method] = ("osscar", "magnitude")
    distil_methods: Sequence[Method] | None = None  # which pruned students to distil; None: all of ``methods``
    train_queries: int = 128  # × 6 pairs each
    distil_queries: int = 32
    eval_queries: int = 40
    calibration_prompts: int = DEFAULT_CALIBRATION_PROMPTS
    sft: TrainConfig = field(default_factory=lambda: TrainConfig(lr=2e-4))
    distil: TrainConfig = field(default_factory=lambda: TrainConfig(lr=3e-5))  # recovery rate, see --distil-lr
    evaluate_base: bool = False
    export: Path | None = None


def _data(cfg: PipelineConfig, seed: int) -> dict[str, Any]:
    d = cfg.out / "data"
    sets = {
        "train": ("train", cfg.train_queries, seed),
        "distil": ("train", cfg.distil_queries, seed + 1),
        "heldout": ("heldout", cfg.eval_queries, seed + 2),
    }
    out = {}
    for name, (split, n, s) in sets.items():
        path = d / f"{name}.jsonl"
        if not path.exists():
            postings, pairs = generate_split(split, n, seed=s)  # type: ignore[arg-type]
            write_jsonl(path, postings, pairs)
        out[name] = load_pairs(path)
    # The training-side sets never contain a reserved occupation (they are the held-out set's).
    for name in ("train", "distil"):
        assert drop_reserved(out[name][1]) == out[name][1], f"{name} set holds reserved occupations"
    return out


def run_pipeline(cfg: PipelineConfig, s: CompressSettings) -> dict[str, Any]:
    """Run the stages; each model is evaluated as soon as it exists (eval.json grows as the run goes)."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    data = _data(cfg, s.seed)
    ex_kw = {"seed": s.seed, "max_doc_chars": s.max_doc_chars, "budget_tokens": s.summary_budget_tokens}
    held_postings, held_pairs = data["heldout"]
    eval_file = cfg.out / "eval.json"
    done = {(r["model"], r["mode"]): r for r in json.loads(eval_file.read_text())} if eval_file.exists() else {}
    results: list[EvalResult] = []
    # Rows of models this run does not touch (an earlier run with other --methods) stay in eval.json.
    kept = [_from_row(r) for r in done.values()]

    def save() -> None:
        names = {r.model for r in results}
        write_json(eval_file, [*(r for r in kept if r.model not in names), *results])

    models: dict[str, Path] = {}

    def evaluate(name: str, path: Path) -> None:
        models[name] = path
        if all((name, m) in done for m in CONTEXT_MODES):
            results.extend(_from_row(done[(name, m)]) for m in CONTEXT_MODES)
            return
        results.extend(
            evaluate_model(
                path,
                held_pairs,
                held_postings,
                engine=s.engine,
                dtype=s.dtype,
                max_model_len=s.max_model_len,
                budget_tokens=s.summary_budget_tokens,
                max_doc_chars=s.max_doc_chars,
                name=name,
            )
        )
        save()

    if cfg.evaluate_base:
        evaluate("base (zero-shot)", cfg.base)
    # 1. teacher
    teacher = cfg.teacher
    if teacher is None:
        teacher = cfg.out / "teacher"
        if not (teacher / "config.json").exists():
            postings, pairs = data["train"]
            train(cfg.base, make_examples(pairs, postings, **ex_kw), teacher, cfg.sft)  # type: ignore[arg-type]
    evaluate("teacher (unpruned)", teacher)
    # 2. prune, evaluate; 3. distil, evaluate
    calib_postings, calib_pairs = data["train"]
    calibration = build_prompts(
        calib_pairs[: cfg.calibration_prompts], calib_postings, "raw", max_doc_chars=s.max_doc_chars
    )
    students: dict[str, Path] = {}
    soft: list[Example] | None = None
    for method in cfg.methods:
        pruned = cfg.out / f"pruned-{method}"
        if not (pruned / "config.json").exists():
            prune_model(teacher, pruned, cfg.keep_ratio, method, calibration, max_len=s.max_len, threads=s.threads)
        students[method] = pruned
        evaluate(f"{method} {cfg.keep_ratio:g}", pruned)
    to_distil = [m for m in cfg.methods if cfg.distil_methods is None or m in cfg.distil_methods]
    for method in to_distil if cfg.distil_queries > 0 else ():
        distilled = cfg.out / f"distilled-{method}"
        if not (distilled / "config.json").exists():
            if soft is None:
                soft = _teacher_labels(cfg, teacher, data["distil"], ex_kw)
            train(students[method], soft, distilled, cfg.distil, model_id=f"{students[method].name}-distilled")
        students[f"{method}+distil"] = distilled
        evaluate(f"{method} {cfg.keep_ratio:g} + distil", distilled)
    # 4. export the OSSCAR student (distilled if it was)
    if cfg.export is not None:
        src = students.get("osscar+distil") or students.get("osscar")
        if src is not None:
            shutil.copytree(src, cfg.export, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint"))
    report = render_report(cfg, teacher, models, results)
    (cfg.out / "report.md").write_text(report)
    return {"report": report, "results": [r.row() for r in results]}


def _teacher_labels(cfg: PipelineConfig, teacher: Path, data: Any, ex_kw: dict[str, Any]) -> list[Example]:
    """The teacher's P(yes) on the distillation set, computed once and cached (every student reuses it)."""
    cache = cfg.out / "data" / "distil_teacher.json"
    postings, pairs = data
    ex = make_examples(pairs, postings, **ex_kw)
    if cache.exists():
        soft = json.loads(cache.read_text())
        if len(soft) == len(ex):
            return [
                Example(e.prompt, cfg.distil.alpha * p + (1 - cfg.distil.alpha) * e.target, e.label)
                for e, p in zip(ex, soft, strict=True)
            ]
    out = distil_examples(teacher, ex, TrainConfig(**{**asdict(cfg.distil), "alpha": 1.0}))
    cache.write_text(json.dumps([e.target for e in out]))
    return [
        Example(e.prompt, cfg.distil.alpha * o.target + (1 - cfg.distil.alpha) * e.target, e.label)
        for e, o in zip(ex, out, strict=True)
    ]


def _from_row(row: dict[str, Any]) -> EvalResult:
    metrics = {k: float(row[k]) for k in ("auc", "ndcg@10", "mrr", "pairs", "queries")}
    return EvalResult(
        row["model"],
        row["mode"],
        metrics,
        float(row["items_per_s"]),
        {"mean_prompt_tokens": row.get("mean_prompt_tokens", 0), **({"ci95": row["ci95"]} if "ci95" in row else {})},
        [float(x) for x in row.get("scores", [])],
    )


def render_report(cfg: PipelineConfig, teacher: Path, models: dict[str, Path], results: Sequence[EvalResult]) -> str:
    lines = ["## Sizes", "", "| model | intermediate | params | non-embedding |", "|---|---:|---:|---:|"]
    for name, path in models.items():
        c = json.loads((path / "config.json").read_text())
        p = count_params(c)
        lines.append(
            f"| {name} | {c['intermediate_size']} | {p['total'] / 1e6:.1f}M | {p['non_embedding'] / 1e6:.1f}M |"
        )
    lines += ["", "## Held-out quality (reserved ESCO occupations)", "", format_table(results), ""]
    return "\n".join(lines)

"""Fine-tune a causal LM as a yes/no relevance classifier (SFT) or distil a teacher's P(yes) into it.

The model reads the worker's exact prompt (``PromptTemplate.qwen3_reranker().render(query, doc)``) and
the loss is cross-entropy over the ["no", "yes"] logits at the answer position (the last prompt token,
left padding), against a hard label (SFT) or the teacher's P(yes) (distillation; the soft-label
cross-entropy has the same gradient as KL(teacher ‖ student) over the two answers). Only the two
answer rows of the LM head are computed, never the full-vocabulary logits.

Checkpoints every ``save_every`` steps under ``<out>/checkpoint`` (model, optimizer, scheduler, step);
a rerun with the same arguments resumes there. Batches are a pure function of the seed and the step, so
a resumed run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compress.data import (
    Pair,
    drop_reserved,
    drop_titles,
    generate_hard_split,
    generate_split,
    load_occupations,
    load_pairs,
)
from compress.evaluate import ContextMode, render_doc
from compress.lora import ADAPTER_VERSION, LoraSpec, write_manifest
from engine.answer import answer_ids, answer_logits, p_yes
from engine.identity import derive_identity, source_model_id
from engine.prompt import PromptTemplate
from schemas import JobPosted

log = logging.getLogger(__name__)

MAX_GRADE = 2  # the generators' grades: 0 not relevant, 1 partly (wrong city or level), 2 relevant


@dataclass(frozen=True)
class Example:
    prompt: str
    target: float  # P(yes) to learn: 0/1 for SFT, the teacher's probability for distillation
    label: int  # the graded label, kept for reporting


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-4
    epochs: float = 1.0
    batch_size: int = 16
    max_len: int = 256
    seed: int = 0
    warmup_frac: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    save_every: int = 25
    threads: int = 2
    # Distillation: target = alpha * teacher P(yes) + (1 - alpha) * hard label (alpha=1: pure soft labels).
    alpha: float = 1.0


def make_examples(
    pairs: Sequence[Pair],
    postings: dict[str, JobPosted],
    *,
    modes: Sequence[ContextMode] = ("raw", "summary"),
    seed: int = 0,
    max_doc_chars: int = 600,
    budget_tokens: int = 128,
    template: PromptTemplate | None = None,
    summary_only: frozenset[str] = frozenset(),
    graded: bool = False,
) -> list[Example]:
    """One example per pair, its context mode drawn from ``modes`` so the model learns to read both — except
    for the queries in ``summary_only``, whose candidates are long postings the worker only ever reads as
    summaries (their first ``max_doc_chars`` are a company blurb, not the job).

    :param graded: learn P(yes) = grade / 2 (grade 1, e.g. the right job in the wrong city, at 0.5) instead of
        1 for every relevant grade: the pointwise loss then ranks a full match above a partial one.
    """
    t = template or PromptTemplate.qwen3_reranker()
    rng = random.Random(seed)
    out = []
    for p in pairs:
        mode = rng.choice(list(modes))
        if p.qid in summary_only:
            mode = "summary"
        doc = render_doc(postings[p.job_id], mode, budget_tokens=budget_tokens, max_doc_chars=max_doc_chars)
        target = min(p.label, MAX_GRADE) / MAX_GRADE if graded else (1.0 if p.label > 0 else 0.0)
        out.append(Example(t.render(p.query, doc), target, p.label))
    return out


def _tokenizer(model_dir: Path) -> object:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.padding_side = "left"
    # Over-long prompts lose their start (instruction) rather than the answer suffix; docs are pre-cut so
    # this is a guard, not the plan.
    tok.truncation_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def score_prompts(
    model_dir: Path, prompts: Sequence[str], *, batch_size: int = 16, max_len: int = 256, threads: int = 2
) -> list[float]:
    """P(yes) from a plain float32 forward, with the training tokenization (teacher labels)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    tok = _tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    ids = answer_ids(tok)
    out: list[float] = []
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths pad less
    res = [0.0] * len(prompts)
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            enc = tok(
                [prompts[i] for i in idx],
                return_tensors="pt",
                padding=True,
                truncation=True,  # type: ignore[operator]
                max_length=max_len,
                add_special_tokens=False,
            )
            p = p_yes(answer_logits(model, dict(enc), ids))
            for i, v in zip(idx, p.tolist(), strict=True):
                res[i] = float(v)
    out.extend(res)
    return out


def _batches(n: int, cfg: TrainConfig, prompts: Sequence[str]) -> list[list[int]]:
    """Deterministic batches for all epochs: shuffle, then sort within windows of 8 batches by length so a
    batch pads little, then shuffle the batch order again."""
    rng = random.Random(cfg.seed)
    total = math.ceil(cfg.epochs * n / cfg.batch_size)
    batches: list[list[int]] = []
    while len(batches) < total:
        idx = list(range(n))
        rng.shuffle(idx)
        win = cfg.batch_size * 8
        epoch_batches = []
        for w in range(0, n, win):
            chunk = sorted(idx[w : w + win], key=lambda i: len(prompts[i]))
            epoch_batches += [chunk[b : b + cfg.batch_size] for b in range(0, len(chunk), cfg.batch_size)]
        rng.shuffle(epoch_batches)
        batches += epoch_batches
    return batches[:total]


def train(
    model_dir: Path,
    examples: Sequence[Example],
    out_dir: Path,
    cfg: TrainConfig = TrainConfig(),
    *,
    model_id: str | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    lora: LoraSpec | None = None,
    grad_checkpointing: bool = False,
    freeze_embeddings_norms: bool = False,
) -> Path | None:
    """Fine-tune ``model_dir`` on ``examples`` and save a plain HF directory at ``out_dir`` — or, with
    ``lora``, train only LoRA matrices on the same loss and save an adapter directory (``compress.lora``;
    the caller writes its manifest).

    :param stop_after: leave after this many steps in this call, with a checkpoint to resume from (a
        time-boxed session); returns None then.
    :param grad_checkpointing: recompute activations in the backward pass (~1/5 of the memory at batch 16,
        ~1.3x the time; same result, so a run may resume with or without it).
    :param freeze_embeddings_norms: full fine-tune of the linear layers only (embeddings, tied LM head and
        norms stay as they are): the whole change is then in the weights a LoRA adapter can express, so
        `compress.lora.extract_lora` loses only what its rank cuts.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tok = _tokenizer(model_dir)
    ids = answer_ids(tok)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    peft_model = None
    if lora is not None:
        from compress.lora import wrap_lora

        peft_model = wrap_lora(model, lora)
        model = peft_model.get_base_model()  # the same modules, LoRA layers injected: answer_logits works as is
    if freeze_embeddings_norms and lora is None:
        for name, p in model.named_parameters():
            if p.dim() < 2 or "embed" in name or "lm_head" in name:
                p.requires_grad_(False)
    if grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    # Dropout off: the small models here have none, and determinism across resumes matters more.
    model.config.use_cache = False
    prompts = [e.prompt for e in examples]
    batches = _batches(len(examples), cfg, prompts)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, int(cfg.warmup_frac * len(batches)))

    def lr_at(step: int) -> float:
        # Linear warm-up, then linear decay to 10%: short CPU runs need the early steps to count.
        if step < warm:
            return (step + 1) / warm
        return max(0.1, 1.0 - 0.9 * (step - warm) / max(1, len(batches) - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    ckpt = out_dir / "checkpoint"
    start = 0
    if (ckpt / "state.pt").exists():
        state = torch.load(ckpt / "state.pt", weights_only=False)
        if (
            state["config"] == asdict(cfg)
            and state["n_examples"] == len(examples)
            and state.get("lora") == (asdict(lora) if lora else None)
        ):
            model.load_state_dict(state["model"], strict=lora is None)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start = int(state["step"])
            log.info("resuming", extra={"step": start, "of": len(batches)})
        else:
            log.warning("checkpoint is from a different run (config or data differ): starting over")
    out_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(out_dir / "train_log.jsonl", "a")  # noqa: SIM115 (closed after the loop; lines flush as we go)
    bar = tqdm(total=len(batches), initial=start, disable=not progress, desc=f"train {out_dir.name}")
    t0 = time.perf_counter()
    ema: float | None = None
    for step in range(start, len(batches)):
        if stop_after is not None and step - start >= stop_after:
            _save_checkpoint(ckpt, model, opt, sched, step, cfg, len(examples), lora)
            bar.close()
            log_file.close()
            return None
        idx = batches[step]
        enc = tok(
            [prompts[i] for i in idx],
            return_tensors="pt",
            padding=True,
            truncation=True,  # type: ignore[operator]
            max_length=cfg.max_len,
            add_special_tokens=False,
        )
        target = torch.tensor([examples[i].target for i in idx], dtype=torch.float32)
        logits = answer_logits(model, dict(enc), ids).float()
        logp = torch.log_softmax(logits, -1)
        loss = -(target * logp[:, 1] + (1 - target) * logp[:, 0]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        lv = float(loss.detach())
        ema = lv if ema is None else 0.9 * ema + 0.1 * lv
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.4f}")
        log_file.write(json.dumps({"step": step + 1, "loss": lv, "lr": sched.get_last_lr()[0]}) + "\n")
        log_file.flush()
        if (step + 1) % cfg.save_every == 0 and step + 1 < len(batches):
            _save_checkpoint(ckpt, model, opt, sched, step + 1, cfg, len(examples), lora)
    bar.close()
    log_file.close()
    model.eval()
    if peft_model is not None and lora is not None:
        from compress.lora import save_adapter

        save_adapter(peft_model, out_dir, lora.save_dtype)
        (out_dir / "training.json").write_text(
            json.dumps(
                {**asdict(cfg), "examples": len(examples), "steps": len(batches), "seconds": time.perf_counter() - t0}
            )
        )
        shutil.rmtree(ckpt, ignore_errors=True)
        return out_dir
    model.config.use_cache = True
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)  # type: ignore[attr-defined]
    derive_identity(
        model_dir,
        out_dir,
        model_id=model_id or f"{source_model_id(model_dir)}-sft",
        revision=f"sft-seed{cfg.seed}-steps{len(batches)}",
        training={**asdict(cfg), "examples": len(examples), "seconds": round(time.perf_counter() - t0, 1)},
    )
    shutil.rmtree(ckpt, ignore_errors=True)
    return out_dir


def _save_checkpoint(
    ckpt: Path,
    model: Any,
    opt: Any,
    sched: Any,
    step: int,
    cfg: TrainConfig,
    n_examples: int,
    lora: LoraSpec | None = None,
) -> None:
    import torch

    ckpt.mkdir(parents=True, exist_ok=True)
    tmp = ckpt / "state.pt.tmp"
    weights = model.state_dict()
    if lora is not None:  # only the adapter trains: the frozen base is not worth 0.5 GB per checkpoint
        weights = {k: v for k, v in weights.items() if "lora_" in k}
    state = {
        "model": weights,
        "lora": asdict(lora) if lora else None,
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "step": step,
        "config": asdict(cfg),
        "n_examples": n_examples,
    }
    torch.save(state, tmp)
    tmp.replace(ckpt / "state.pt")  # atomic: a crash mid-save leaves the previous checkpoint


def distil_examples(teacher_dir: Path, examples: Sequence[Example], cfg: TrainConfig) -> list[Example]:
    """Replace targets by alpha * teacher P(yes) + (1 - alpha) * hard label."""
    soft = score_prompts(teacher_dir, [e.prompt for e in examples], max_len=cfg.max_len, threads=cfg.threads)
    return [
        Example(e.prompt, cfg.alpha * s + (1 - cfg.alpha) * e.target, e.label)
        for e, s in zip(examples, soft, strict=True)
    ]


# --- compress-sft: the training set, and the record of what made the model ------------------------


@dataclass(frozen=True)
class SftData:
    """An SFT run's training set and how it was made: ``recipe`` is recorded beside the output (recipe.json
    or the adapter's manifest), so a model carries the data that made it."""

    postings: dict[str, JobPosted]
    pairs: list[Pair]  # reserved evaluation occupations already dropped
    recipe: dict[str, Any]  # JSON: seed, document cut, context modes, data source and variations, pair counts
    dropped: int  # pairs dropped for a reserved evaluation occupation (a --data file may hold them)
    summary_only: frozenset[str] = frozenset()  # query ids whose long postings are read as summaries only


def sft_data(
    *,
    data: str | Path | None = None,
    queries: int = 128,
    drop_title_frac: float = 0.0,
    hard_queries: int = 0,
    hard_candidates: int = 6,
    outside_queries: int = 0,
    outside_candidates: int = 8,
    seed: int,
    max_doc_chars: int,
) -> SftData:
    """The compress-sft training set: the pairs file ``data`` (recorded as given), else ``queries`` generated
    from the train split; a ``drop_title_frac`` of the queries then lose their jobs' title line (`drop_titles`)
    and ``hard_queries`` hard-format queries are added (``hard_candidates`` jobs each, one relevant, the
    negatives shared between title and similar-occupation ones), and ``outside_queries`` in the outside split's
    shape from the train occupations (`compress.outside.generate_outside`: alternative-title, duty/skill and
    title + seniority/city/skill queries against long postings, ``outside_candidates`` each: the occupation's
    two postings graded 2/1, the rest hard negatives; read as summaries). Reserved evaluation occupations are dropped
    last, whatever the source: the held-out set must stay unseen. ``max_doc_chars`` is only recorded (the
    examples are cut there)."""
    recipe: dict[str, Any] = {"seed": seed, "max_doc_chars": max_doc_chars, "modes": ["raw", "summary"]}
    if data:
        postings, pairs = load_pairs(Path(data))
        recipe["file"] = str(data)
    else:
        postings, pairs = generate_split("train", queries, seed=seed)
        recipe["esco_train"] = {"queries": queries, "seed": seed, "pairs_per_query": 6}
    if drop_title_frac > 0:
        pairs = drop_titles(postings, pairs, drop_title_frac, seed=seed)
        recipe["drop_title_frac"] = drop_title_frac
    if hard_queries > 0:
        c = hard_candidates
        hp, hpairs = generate_hard_split(
            "train",
            hard_queries,
            seed=seed + 100,
            candidates=c,
            title_negatives=(c - 1) * 2 // 5,
            similar_negatives=(c - 1) * 2 // 5,
        )
        postings.update(hp)
        pairs = [*pairs, *hpairs]
        recipe["esco_train_hard_format"] = {"queries": hard_queries, "seed": seed + 100, "candidates": c}
    summary_only: frozenset[str] = frozenset()
    if outside_queries > 0:
        from compress.outside import generate_outside

        c = outside_candidates
        negatives = c - 2
        op, opairs, kinds = generate_outside(
            load_occupations("train"),
            outside_queries,
            candidates=c,
            title_negatives=negatives * 2 // 5 + 1,
            similar_negatives=negatives * 2 // 5,
            seed=seed + 200,
        )
        postings.update(op)
        pairs = [*pairs, *opairs]
        summary_only = frozenset(kinds)
        recipe["esco_train_outside_format"] = {
            "queries": outside_queries,
            "seed": seed + 200,
            "candidates": c,
            "kinds": {k: sum(v == k for v in kinds.values()) for k in sorted(set(kinds.values()))},
            "context": "summary",
        }
    kept = drop_reserved(pairs)
    recipe["pairs"] = len(kept)
    recipe["relevant"] = sum(p.label > 0 for p in kept)
    return SftData(
        postings=postings, pairs=kept, recipe=recipe, dropped=len(pairs) - len(kept), summary_only=summary_only
    )


def record_sft_output(
    out_dir: Path,
    base_dir: Path,
    *,
    recipe: dict[str, Any],
    lora: LoraSpec | None,
    command: Sequence[str],
    adapter_version: str = ADAPTER_VERSION,
) -> None:
    """Write what made the model `train` saved at ``out_dir`` from ``base_dir`` beside it. A full fine-tune
    gets recipe.json (``command`` and the data ``recipe``, and the base's own recipe.json when the base was
    itself a compress-sft output: a second stage), which compress-extract-lora copies into an adapter's
    manifest. An adapter gets manifest.json (`write_manifest`), taking in the training.json `train` left."""
    if lora is None:
        made: dict[str, Any] = {"command": list(command), "data": recipe}
        if (base_dir / "recipe.json").exists():
            made["starting_from"] = json.loads((base_dir / "recipe.json").read_text())
        elif (base_dir / "jobscore_model.json").exists():  # a shipped scorer (e.g. scorer-full): its identity
            made["starting_from"] = json.loads((base_dir / "jobscore_model.json").read_text())
        (out_dir / "recipe.json").write_text(json.dumps(made, indent=2) + "\n")
        return
    training = json.loads((out_dir / "training.json").read_text())
    (out_dir / "training.json").unlink()
    write_manifest(
        out_dir,
        base_dir,
        base_model=source_model_id(base_dir),
        spec=lora,
        training=training,
        data=recipe,
        command=command,
        version=adapter_version,
    )

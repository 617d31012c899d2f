"""Pack a pruned model as the committed files `engine.pruned_scorer` rebuilds it from.

From the unpruned model and its pruned copy (`compress.prune.prune_model` output), per layer: the kept neuron
indices (found by matching the pruned ``gate_proj`` rows to the unpruned ones: pruning copies rows exactly,
so the match also proves the pruned model came from this parent) and the re-fitted ``down_proj`` in
float16. Then the model is rebuilt from exactly those files the way a user's first start rebuilds it, and its
P(yes) on fixed check prompts (train-split ESCO text, never a reserved occupation) is recorded in the
manifest with a tolerance.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from engine.pruned_scorer import WEIGHTS_FILE, apply_pruning, check_scores
from engine.scorer import sha256_file

CHECK_TOLERANCE = 2e-3  # float32 merge differences between CPUs are ~1e-5; a wrong parent moves scores by > 0.01


def kept_indices(parent_gate: Any, pruned_gate: Any) -> Any:
    """Indices into ``parent_gate``'s rows of each row of ``pruned_gate`` (exact copies), sorted ascending."""
    import torch

    index = {hashlib.sha1(row.numpy().tobytes()).digest(): i for i, row in enumerate(parent_gate)}
    keep = []
    for row in pruned_gate:
        i = index.get(hashlib.sha1(row.numpy().tobytes()).digest())
        if i is None:
            raise ValueError("a pruned gate_proj row is not a row of the unpruned model: not pruned from this parent")
        keep.append(i)
    if keep != sorted(keep) or len(set(keep)) != len(keep):
        raise ValueError("kept neurons are not in ascending order without repeats (prune_model keeps them sorted)")
    return torch.tensor(keep, dtype=torch.int32)


def check_prompts(n: int = 8, seed: int = 0) -> list[str]:
    from compress.data import drop_reserved, generate_split
    from compress.evaluate import render_doc
    from engine.prompt import PromptTemplate

    postings, pairs = generate_split("train", n, seed=seed)
    tmpl = PromptTemplate.qwen3_reranker()
    # First pair of each query: a mix of relevant and not (generate puts the positives first).
    seen: set[str] = set()
    out = []
    for p in drop_reserved(pairs):
        if p.qid in seen:
            continue
        seen.add(p.qid)
        out.append(tmpl.render(p.query, render_doc(postings[p.job_id], "summary")))
    return out[:n]


def pack_pruned(
    unpruned: Path,
    pruned: Path,
    out_dir: Path,
    *,
    version: str,
    parent_adapter: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``out_dir/pruned.safetensors`` and ``out_dir/manifest.json``; returns the manifest."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parent_w = load_file(str(unpruned / "model.safetensors"))
    pruned_w = load_file(str(pruned / "model.safetensors"))
    n_layers = json.loads((unpruned / "config.json").read_text())["num_hidden_layers"]
    tensors: dict[str, Any] = {}
    for i in range(n_layers):
        pre = f"model.layers.{i}.mlp"
        keep = kept_indices(parent_w[f"{pre}.gate_proj.weight"].float(), pruned_w[f"{pre}.gate_proj.weight"].float())
        up_ok = torch.equal(parent_w[f"{pre}.up_proj.weight"][keep.long()], pruned_w[f"{pre}.up_proj.weight"])
        if not up_ok:
            raise ValueError(f"layer {i}: up_proj rows do not match the kept gate_proj rows")
        tensors[f"layers.{i}.keep"] = keep
        tensors[f"layers.{i}.down_proj"] = pruned_w[f"{pre}.down_proj.weight"].to(torch.float16).contiguous()
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_FILE
    save_file(tensors, str(weights), metadata={"format": "jobscore-pruned-v1"})
    # Rebuild from the written file exactly as engine.pruned_scorer does, and record its scores.
    model = AutoModelForCausalLM.from_pretrained(str(unpruned), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(unpruned))
    width = apply_pruning(model, load_file(str(weights)))
    prompts = check_prompts()
    manifest = {
        "version": version,
        "model_id": f"{json.loads((unpruned / 'jobscore_model.json').read_text()).get('model_id', 'scorer')}-pruned",
        "parent_adapter": parent_adapter,
        "method": "osscar",
        "width": width,
        "weights_sha256": sha256_file(weights),
        "weights_bytes": weights.stat().st_size,
        "check": {"prompts": prompts, "scores": check_scores(model, tok, prompts), "tolerance": CHECK_TOLERANCE},
        **(extra or {}),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest

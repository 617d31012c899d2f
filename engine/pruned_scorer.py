"""The shipped pruned scorer: the OSSCAR-pruned relevance scorer, rebuilt from committed files on first use.

``engine/scorer_pruned/`` holds ``pruned.safetensors`` and ``manifest.json``. For every decoder layer the file
has the kept MLP neurons (``layers.<i>.keep``, sorted indices into the unpruned scorer's intermediate
dimension) and the re-fitted down projection on them (``layers.<i>.down_proj``, float16: OSSCAR's
least-squares re-fit, compress/prune.py). The build:

1. builds the unpruned shipped scorer (`engine.scorer.build_scorer`: the packaged SmolLM2 + the LoRA adapter
   the manifest names as its parent),
2. keeps the listed rows of ``gate_proj``/``up_proj`` and puts the committed ``down_proj`` in place,
3. checks the result: the committed file's sha256, then P(yes) on the manifest's check prompts within
   ``check.tolerance`` of the scores recorded when the file was made. The float32 merge of step 1 may differ
   in the last bits between CPUs (kernel order), so the identity is pinned by scores, not by a hash of
   the built weights.

Nothing is trained at build time and no calibration is re-run: slicing and copying are exact.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.identity import write_identity
from engine.scorer import (
    SHIPPED_ADAPTER,
    AdapterManifest,
    ScorerBuildError,
    build_scorer,
    is_built,
    read_manifest,
    sha256_file,
)
from engine.tinymodel import default_cache_dir

log = logging.getLogger(__name__)

SHIPPED_PRUNED = Path(__file__).resolve().parent / "scorer_pruned"
WEIGHTS_FILE = "pruned.safetensors"


@dataclass(frozen=True)
class PrunedManifest:
    version: str
    parent_adapter: str  # the adapter version of the unpruned scorer it was pruned from
    width: int  # MLP intermediate size after pruning
    weights_sha256: str
    check_prompts: list[str]
    check_scores: list[float]
    tolerance: float
    raw: dict[str, Any]

    @classmethod
    def read(cls, pruned_dir: Path) -> PrunedManifest:
        m = read_manifest(pruned_dir, "a pruned scorer")
        return cls(
            version=m["version"],
            parent_adapter=m["parent_adapter"],
            width=int(m["width"]),
            weights_sha256=m["weights_sha256"],
            check_prompts=list(m["check"]["prompts"]),
            check_scores=[float(x) for x in m["check"]["scores"]],
            tolerance=float(m["check"]["tolerance"]),
            raw=m,
        )


def shrink_mlp(mlp: Any, keep: Any, down: Any | None = None) -> None:
    """Replace an MLP's gate/up/down projections by the ``keep`` neurons (rows of gate and up, columns of down,
    or ``down`` given whole: a re-fit). New Linear modules in the weights' dtype."""
    import torch

    def linear(w: Any, bias: Any | None) -> Any:
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=bias is not None, dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w)
            if bias is not None:
                lin.bias.copy_(bias)
        return lin

    g, u, d = mlp.gate_proj, mlp.up_proj, mlp.down_proj
    mlp.gate_proj = linear(g.weight[keep], None if g.bias is None else g.bias[keep])
    mlp.up_proj = linear(u.weight[keep], None if u.bias is None else u.bias[keep])
    mlp.down_proj = linear(down.to(d.weight.dtype) if down is not None else d.weight[:, keep], d.bias)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(keep)


def check_scores(model: Any, tokenizer: Any, prompts: Sequence[str]) -> list[float]:
    """P(yes) of each prompt, one at a time (no padding: the same numbers on any batch layout)."""
    import torch

    from engine.answer import answer_ids, answer_logits, p_yes

    ids = answer_ids(tokenizer)
    out: list[float] = []
    with torch.inference_mode():
        for p in prompts:
            enc = tokenizer([p], return_tensors="pt", add_special_tokens=False)
            out.append(float(p_yes(answer_logits(model, dict(enc), ids))[0]))
    return out


def pruned_scorer_dir(cache_dir: Path | None = None, pruned_dir: Path = SHIPPED_PRUNED) -> Path:
    return (cache_dir or default_cache_dir()) / "models" / PrunedManifest.read(pruned_dir).version


def apply_pruning(model: Any, tensors: dict[str, Any]) -> int:
    """Cut ``model``'s MLPs to the kept neurons and committed down projections in ``tensors``; returns the width."""
    layers = model.model.layers
    if f"layers.{len(layers) - 1}.keep" not in tensors or f"layers.{len(layers)}.keep" in tensors:
        raise ScorerBuildError(f"the pruned weights are for another layer count than the model's ({len(layers)})")
    widths = set()
    for i, layer in enumerate(layers):
        keep = tensors[f"layers.{i}.keep"].long()
        shrink_mlp(layer.mlp, keep, tensors[f"layers.{i}.down_proj"].float())
        widths.add(len(keep))
    if len(widths) != 1:
        raise ScorerBuildError(f"the pruned weights have layers of different widths {sorted(widths)}")
    model.config.intermediate_size = widths.pop()
    return int(model.config.intermediate_size)


def build_pruned(unpruned: Path, pruned_dir: Path, out: Path, *, force: bool = False) -> Path:
    """``unpruned`` cut as ``pruned_dir`` (manifest + weights) says, checked, saved at ``out`` (atomically)."""
    manifest = PrunedManifest.read(pruned_dir)
    if is_built(out) and not force:
        return out
    weights = pruned_dir / WEIGHTS_FILE
    actual = sha256_file(weights) if weights.exists() else "missing"
    if actual != manifest.weights_sha256:
        raise ScorerBuildError(
            f"{weights}: sha256 {actual[:16]}… but the manifest says {manifest.weights_sha256[:16]}… — the file is "
            "damaged or a Git LFS pointer; check out the repository's file again"
        )
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(unpruned), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(unpruned))
    width = apply_pruning(model, load_file(str(weights)))
    if width != manifest.width:
        raise ScorerBuildError(f"{weights} has width {width}, the manifest says {manifest.width}")
    got = check_scores(model, tok, manifest.check_prompts)
    worst = max(abs(a - b) for a, b in zip(got, manifest.check_scores, strict=True))
    if worst > manifest.tolerance:
        raise ScorerBuildError(
            f"the rebuilt {manifest.version} scores its check prompts up to {worst:.4f} away from the recorded scores "
            f"(tolerance {manifest.tolerance}): the unpruned scorer it starts from ({unpruned}) differs; rebuild it "
            "with `jobscore build-scorer --force`, or re-pack the pruned scorer on this base (the command is in the "
            "manifest)"
        )
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    write_identity(
        tmp,
        model_id=str(manifest.raw.get("model_id", "scorer-pruned")),
        revision=manifest.version,
        adapter={"version": manifest.parent_adapter},
        pruning={
            "method": manifest.raw.get("method"),
            "width": manifest.width,
            "weights_sha256": manifest.weights_sha256,
            "check_max_abs_diff": worst,
        },
    )
    if force:
        shutil.rmtree(out, ignore_errors=True)
    try:
        tmp.rename(out)
    except OSError:  # another process finished first: its build is the same
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("built the pruned scorer", extra={"path": str(out), "version": manifest.version, "check": worst})
    return out


def build_pruned_scorer(
    cache_dir: Path | None = None,
    *,
    pruned_dir: Path = SHIPPED_PRUNED,
    adapter_dir: Path = SHIPPED_ADAPTER,
    force: bool = False,
) -> Path:
    """The shipped pruned scorer's directory, built on first use (~30 s on 2 CPUs after the unpruned scorer) and
    cached by version."""
    manifest = PrunedManifest.read(pruned_dir)
    out = pruned_scorer_dir(cache_dir, pruned_dir)
    if is_built(out) and not force:
        return out
    parent = AdapterManifest.read(adapter_dir)
    if parent.version != manifest.parent_adapter:
        raise ScorerBuildError(
            f"the pruned scorer {manifest.version} was pruned from {manifest.parent_adapter}, but the adapter here is "
            f"{parent.version}: re-prune it from this adapter (the command is in {pruned_dir / 'manifest.json'})"
        )
    return build_pruned(build_scorer(cache_dir, adapter_dir=adapter_dir), pruned_dir, out, force=force)

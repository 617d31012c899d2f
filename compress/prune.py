"""Structured pruning of the MLP intermediate neurons: OSSCAR and two baselines.

OSSCAR (Meng, Behdin, Wang, Mazumder; ICML 2024, "OSSCAR: One-Shot Structured Pruning in Vision and
Language Models with Combinatorial Optimization"). For one MLP with intermediate activations
X = act(gate(h)) * up(h) on calibration tokens (N × D) and down projection W (H × D), keep a set S of k
neurons so that the layer output changes least:

    min_{|S| = k}  ||X Wᵀ − X_S W_Sᵀ||²  =  r_Rᵀ Q r_R,   Q = (XᵀX) ∘ (WᵀW),  R = the removed neurons,

a quadratic over subsets. We start from the k neurons with the largest single-removal cost Q_ii and
run local search with swap moves (one kept neuron out, one removed neuron in). With v = Q r_R the change
of a swap (i out, j in) is Δ = 2 v_i + Q_ii − 2 v_j + Q_jj − 2 Q_ij, so every candidate swap is scored at
once from Q, the best improving one is applied and v is updated in O(D). The search stops when no swap
improves. Then the down projection is re-fit on the kept neurons by least squares (ridge-regularised
normal equations on the Gram matrix G = XᵀX, so X itself is never stored):

    W_S' = W G_{:,S} (G_{S,S} + λI)⁻¹.

Baselines: ``magnitude`` keeps the neurons whose weights (gate row, up row, down column) have the largest
norm; ``activation`` keeps the largest ||X_i|| · ||W_{:,i}|| (= √Q_ii: OSSCAR's starting point, without
search or re-fit). All layers get the same width, so the result is a normal HF directory with a smaller
``intermediate_size`` that transformers and vLLM load unchanged.

Calibration activations come from the unpruned model in one pass (all layers at once).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from engine.identity import derive_identity, source_model_id

log = logging.getLogger(__name__)

Method = Literal["osscar", "magnitude", "activation"]

# Calibration size matters more than anything else we tried for OSSCAR: on SmolLM2 at keep 0.6 (bench/RESULTS.md
# §3) 64 training prompts (~10k tokens for a 1,536-wide Gram matrix) kept AUC 0.922 of the teacher's 0.953;
# 256 prompts kept 0.953 with no fine-tuning at all. Pruning all 30 layers took ~2 min on 2 vCPUs at 256.
DEFAULT_CALIBRATION_PROMPTS = 256
METHODS: tuple[Method, ...] = ("osscar", "magnitude", "activation")
# Which parameters a size target counts: all of them, or without the embedding (and an untied LM head).
ParamBasis = Literal["total", "non_embedding"]
PARAM_BASES: tuple[ParamBasis, ...] = ("total", "non_embedding")

# Qwen3-0.6B (the paper's starting model): the figures the size report is computed from.
QWEN3_0_6B: dict[str, Any] = {
    "model_type": "qwen3",
    "num_hidden_layers": 28,
    "hidden_size": 1024,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 3072,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
}


# --- sizes ----------------------------------------------------------------------------------------


def count_params(cfg: dict[str, Any], intermediate_size: int | None = None) -> dict[str, int]:
    """Parameters of a Llama/Qwen3-style decoder from its config (gated MLP, RMSNorm, optional q/k norm)."""
    h, n_layers, vocab = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"]), int(cfg["vocab_size"])
    inter = int(intermediate_size or cfg["intermediate_size"])
    heads, kv = int(cfg["num_attention_heads"]), int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"])
    hd = int(cfg.get("head_dim") or h // heads)
    attn = h * heads * hd + 2 * h * kv * hd + heads * hd * h
    if cfg.get("attention_bias"):
        attn += heads * hd + 2 * kv * hd
    qk_norm = 2 * hd if cfg.get("model_type") == "qwen3" else 0
    mlp = 3 * h * inter + ((2 * inter + h) if cfg.get("mlp_bias") else 0)
    per_layer = attn + qk_norm + mlp + 2 * h
    emb = vocab * h
    head = 0 if cfg.get("tie_word_embeddings", True) else vocab * h
    total = n_layers * per_layer + emb + head + h
    return {"total": total, "non_embedding": total - emb - head, "mlp": n_layers * mlp, "embedding": emb + head}


def keep_ratio_for(cfg: dict[str, Any], target: int, which: ParamBasis = "total") -> float:
    """The MLP keep ratio that brings ``which`` parameters to ``target`` (MLP width is the only cut)."""
    full = count_params(cfg)
    per_neuron = full["mlp"] / int(cfg["intermediate_size"])
    removed = full[which] - target
    return max(0.0, 1.0 - removed / full["mlp"]) if per_neuron else 1.0


# --- calibration ----------------------------------------------------------------------------------


def calibration_prompts(n: int, *, seed: int, max_doc_chars: int, outside_frac: float = 0.0) -> list[str]:
    """``n`` worker prompts from the train split to calibrate on: never a reserved evaluation occupation, so
    pruning sees nothing of the held-out set it is then measured on. Default-format pairs (title-word queries,
    ~6 jobs each, raw context) — and, with ``outside_frac``, that share in the outside split's shape (alternative
    title, duty/skill and constrained queries against long postings read as summaries, compress/outside.py):
    the activations the worker sees when it reads summaries of long postings."""
    from compress.data import drop_reserved, generate_split, load_occupations
    from compress.evaluate import build_prompts

    n_outside = round(n * outside_frac)
    n_default = n - n_outside
    out: list[str] = []
    if n_default:
        postings, pairs = generate_split("train", max(1, n_default // 6 + 1), seed=seed)
        out += build_prompts(drop_reserved(pairs)[:n_default], postings, "raw", max_doc_chars=max_doc_chars)
    if n_outside:
        from compress.outside import generate_outside

        op, opairs, _ = generate_outside(load_occupations("train"), n_outside // 8 + 1, candidates=8, seed=seed + 300)
        out += build_prompts(drop_reserved(opairs)[:n_outside], op, "summary")
    return out


# --- per-layer algorithms -------------------------------------------------------------------------


def _t() -> Any:
    import torch

    return torch


def reconstruction_error(G: Any, W: Any, keep: Any, W_new: Any | None = None) -> float:
    """||X Wᵀ − X_S W_newᵀ||² from the Gram matrix G = XᵀX (W_new defaults to W's kept columns)."""
    torch = _t()
    G, W = G.double(), W.double()
    keep = torch.as_tensor(keep, dtype=torch.long)
    Wn = W[:, keep] if W_new is None else W_new.double()
    full = torch.einsum("hd,de,he->", W, G, W)
    cross = torch.einsum("hs,sd,hd->", Wn, G[keep], W)
    own = torch.einsum("hs,st,ht->", Wn, G[keep][:, keep], Wn)
    return float(full - 2 * cross + own)


def osscar_select(
    G: Any, W: Any, k: int, *, max_iters: int | None = None, tol: float = 1e-9
) -> tuple[Any, list[float]]:
    """Local search over k-subsets of the D neurons (see the module docstring).

    :param max_iters: most swaps (default ``min(4 D, 2000)``: each costs O(k (D − k)) on the CPU).
    :param tol: stop when the best swap gains less than this fraction of the objective.
    :returns: the kept neuron indices (sorted) and the objective after the start and after each swap,
        which never increases.
    """
    torch = _t()
    D = G.shape[0]
    if not 0 < k <= D:
        raise ValueError(f"k must be in 1..{D}, got {k}")
    Q = G.double() * (W.double().T @ W.double())
    diag = torch.diagonal(Q).clone()
    removed = torch.ones(D, dtype=torch.bool)
    removed[torch.argsort(diag, descending=True)[:k]] = False
    r = removed.double()
    v = Q @ r
    f = float(r @ v)
    history = [f]
    if k == D:
        return torch.arange(D), history
    iters = max_iters if max_iters is not None else min(4 * D, 2000)
    for _ in range(iters):
        kept_idx = torch.nonzero(~removed).squeeze(1)
        rem_idx = torch.nonzero(removed).squeeze(1)
        out_cost = 2 * v[kept_idx] + diag[kept_idx]  # moving i into R
        in_cost = -2 * v[rem_idx] + diag[rem_idx]  # moving j out of R
        delta = out_cost[:, None] + in_cost[None, :] - 2 * Q[kept_idx][:, rem_idx]
        best = int(torch.argmin(delta))
        d = float(delta.view(-1)[best])
        if d >= -tol * max(abs(f), 1e-30):
            break
        i, j = int(kept_idx[best // len(rem_idx)]), int(rem_idx[best % len(rem_idx)])
        removed[i], removed[j] = True, False
        v += Q[:, i] - Q[:, j]
        f += d
        history.append(f)
    return torch.nonzero(~removed).squeeze(1), history


def refit_down(G: Any, W: Any, keep: Any, ridge: float = 1e-6) -> Any:
    """Least-squares down projection on the kept neurons: W G_{:,S} (G_SS + λI)⁻¹, λ relative to mean diag."""
    torch = _t()
    keep = torch.as_tensor(keep, dtype=torch.long)
    G = G.double()
    Gss = G[keep][:, keep]
    lam = ridge * float(torch.diagonal(Gss).mean().clamp_min(1e-12))
    A = Gss + lam * torch.eye(len(keep), dtype=torch.float64)
    rhs = G[keep] @ W.double().T  # (k, H)
    return torch.linalg.solve(A, rhs).T.to(W.dtype)


def magnitude_scores(gate: Any, up: Any, down: Any) -> Any:
    """Per-neuron weight norm: gate row, up row and down column together."""
    return (gate.double().pow(2).sum(1) + up.double().pow(2).sum(1) + down.double().pow(2).sum(0)).sqrt()


def activation_scores(G: Any, down: Any) -> Any:
    """||X_i|| · ||W_{:,i}||: how much removing neuron i alone changes the output (√Q_ii)."""
    torch = _t()
    return torch.diagonal(G.double()).clamp_min(0).sqrt() * down.double().pow(2).sum(0).sqrt()


# --- whole model ----------------------------------------------------------------------------------


def _mlps(model: Any) -> list[Any]:
    return [layer.mlp for layer in model.model.layers]


def collect_grams(
    model: Any, tokenizer: Any, texts: Sequence[str], *, max_len: int = 256, batch_size: int = 8
) -> tuple[list[Any], int]:
    """XᵀX of every layer's down-projection input over the (non-padding) calibration tokens, in float64."""
    torch = _t()
    mlps = _mlps(model)
    grams = [torch.zeros(m.down_proj.in_features, m.down_proj.in_features, dtype=torch.float64) for m in mlps]
    mask_holder: dict[str, Any] = {}

    def hook(idx: int) -> Any:
        def fn(_mod: Any, inputs: tuple[Any, ...]) -> None:
            x = inputs[0]
            x = x[mask_holder["mask"]] if x.dim() == 3 else x
            x = x.double()
            grams[idx].addmm_(x.T, x)

        return fn

    handles = [m.down_proj.register_forward_pre_hook(hook(i)) for i, m in enumerate(mlps)]
    n_tokens = 0
    try:
        with torch.inference_mode():
            for s in range(0, len(texts), batch_size):
                enc = tokenizer(
                    list(texts[s : s + batch_size]),
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=max_len,
                    add_special_tokens=False,
                )
                mask_holder["mask"] = enc["attention_mask"].bool()
                n_tokens += int(enc["attention_mask"].sum())
                model.model(**enc)
    finally:
        for h in handles:
            h.remove()
    return grams, n_tokens


@dataclass
class PruneReport:
    method: Method
    keep_ratio: float
    intermediate_before: int
    intermediate_after: int
    params_before: dict[str, int]
    params_after: dict[str, int]
    calibration_tokens: int = 0
    seconds: float = 0.0
    # Per layer, relative output error ||XWᵀ − X_S W'ᵀ||² / ||XWᵀ||² on the calibration tokens.
    layer_error: list[float] = field(default_factory=list)
    layer_error_before_search: list[float] = field(default_factory=list)
    layer_error_before_refit: list[float] = field(default_factory=list)
    swaps: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def prune_model(
    model_dir: Path,
    out_dir: Path,
    keep_ratio: float,
    method: Method = "osscar",
    calibration: Sequence[str] = (),
    *,
    max_len: int = 256,
    batch_size: int = 8,
    multiple_of: int = 1,
    refit: bool = True,
    ridge: float = 1e-6,
    max_iters: int | None = None,
    threads: int = 2,
    save_dtype: str | None = None,
) -> PruneReport:
    """Prune every MLP to the same width ``round(keep_ratio * D)`` (rounded up to ``multiple_of``) and save
    an HF directory at ``out_dir`` with ``intermediate_size`` changed. ``calibration`` (prompts, never
    from the reserved evaluation occupations) is needed by ``osscar`` and ``activation``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    if not 0 < keep_ratio <= 1:
        raise ValueError("keep_ratio must be in (0, 1]")
    if method != "magnitude" and not calibration:
        raise ValueError(f"{method} pruning needs calibration prompts")
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.padding_side = "left"
    tok.truncation_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    cfg = model.config.to_dict()
    D = int(model.config.intermediate_size)
    k = min(D, max(1, math.ceil(round(keep_ratio * D) / multiple_of) * multiple_of))
    report = PruneReport(method, keep_ratio, D, k, count_params(cfg), count_params(cfg, k))
    grams: list[Any] = []
    if method != "magnitude":
        grams, report.calibration_tokens = collect_grams(
            model, tok, calibration, max_len=max_len, batch_size=batch_size
        )
    with torch.no_grad():
        for li, mlp in enumerate(_mlps(model)):
            gate, up, down = mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight
            W_new = None
            if method == "magnitude":
                keep = torch.sort(torch.argsort(magnitude_scores(gate, up, down), descending=True)[:k]).values
            elif method == "activation":
                keep = torch.sort(torch.argsort(activation_scores(grams[li], down), descending=True)[:k]).values
            else:
                keep, hist = osscar_select(grams[li], down, k, max_iters=max_iters)
                keep = torch.sort(keep).values
                report.swaps.append(len(hist) - 1)
                if refit and k < D:
                    W_new = refit_down(grams[li], down, keep, ridge)
            if grams:
                G = grams[li]
                base = reconstruction_error(G, down, torch.arange(0)) or 1.0  # ||XWᵀ||²
                if method == "osscar":
                    report.layer_error_before_search.append(hist[0] / base)
                    report.layer_error_before_refit.append(hist[-1] / base)
                report.layer_error.append(reconstruction_error(G, down, keep, W_new) / base)
            _shrink(mlp, keep, W_new)
    model.config.intermediate_size = k
    if save_dtype:
        model.to(getattr(torch, save_dtype))
    elif isinstance(cfg.get("torch_dtype") or cfg.get("dtype"), str):
        model.to(getattr(torch, cfg.get("torch_dtype") or cfg.get("dtype")))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    report.seconds = round(time.perf_counter() - t0, 2)
    derive_identity(
        model_dir,
        out_dir,
        model_id=f"{source_model_id(model_dir)}-{method}{k}",
        revision=f"{method}-keep{keep_ratio:g}-width{k}",
        pruning=report.to_json(),
    )
    log.info("pruned", extra={"method": method, "width": k, "params": report.params_after["total"]})
    return report


def _shrink(mlp: Any, keep: Any, down_new: Any | None) -> None:
    """Replace the three projections by their kept rows/columns (the one slicing the shipped build uses too)."""
    from engine.pruned_scorer import shrink_mlp

    shrink_mlp(mlp, keep, down_new)

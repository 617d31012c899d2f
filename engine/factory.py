"""The one way to build a scoring engine from settings.

The worker, the demo, the summarizer's tools and compress/ all build engines here, so a model is
served the same way everywhere (same dtype handling, same environment defaults, same default model).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from engine.engines import HfEngine, ScoringEngine, VllmEngine
from engine.tinymodel import build_tiny_model, default_cache_dir

EngineKind = Literal["vllm", "hf"]


class EngineSettings(Protocol):
    """What the factory reads; `WorkerSettings`, `CompressSettings` and `EngineOptions` all have it."""

    engine: EngineKind
    dtype: str
    max_model_len: int
    cache_dir: Path


@dataclass(frozen=True)
class EngineOptions:
    """Engine settings for callers without a settings object (offline tools, benchmarks)."""

    engine: EngineKind = "vllm"
    dtype: str = "auto"
    max_model_len: int = 2048
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    kv_block_size: int | None = None
    engine_step_tokens: int | None = None
    model: Path | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)


# Model names the settings accept besides a directory. ``scorer`` is the default scorer: DEFAULT_SCORER names it.
SCORER, SCORER_FULL, SCORER_PRUNED, TINY = "scorer", "scorer-full", "scorer-pruned", "tiny"
MODEL_NAMES = (SCORER, SCORER_FULL, SCORER_PRUNED, TINY)
# The pruned scorer is the default: on the hard held-out split it is within 1% AUC of the unpruned one (raw 0.955 vs
# 0.961, summary 0.959 vs 0.967; NDCG@10 0.852/0.875 vs 0.866/0.873) with 62.5% of its non-embedding weights
# (bench/RESULTS.md "The pruned scorer"); scorer-full stays one name away.
DEFAULT_SCORER = SCORER_PRUNED


def resolve_model(model: str | Path | None, cache_dir: Path) -> Path:
    """A model directory for ``model``: a directory as is; ``scorer-full`` → the shipped scorer (its LoRA adapter
    merged into the packaged SmolLM2 on first use, engine/scorer.py); ``scorer-pruned`` → its OSSCAR-pruned cut,
    rebuilt from engine/scorer_pruned (engine/pruned_scorer.py); ``scorer`` or nothing → `DEFAULT_SCORER`;
    ``tiny`` → the random-weight test model (plumbing tests only: its scores mean nothing)."""
    name = str(model) if model is not None else SCORER
    if name == SCORER:
        name = DEFAULT_SCORER
    if name == SCORER_FULL:
        from engine.scorer import build_scorer

        return build_scorer(cache_dir)
    if name == SCORER_PRUNED:
        from engine.pruned_scorer import build_pruned_scorer

        return build_pruned_scorer(cache_dir)
    if name == TINY:
        return build_tiny_model(cache_dir)
    return Path(model)  # type: ignore[arg-type]


def resolve_dtype(dtype: str) -> str:
    """``auto`` on a host without a GPU is float32: vLLM's ``auto`` turns a float32 checkpoint (the merged
    scorer) into float16, which CPUs without half-precision kernels run slowly and less exactly (checked on
    this project's AMD EPYC hosts). On a GPU, ``auto`` is left to vLLM (bfloat16/float16)."""
    if dtype != "auto":
        return dtype
    import torch

    return "auto" if torch.cuda.is_available() else "float32"


def engine_from_settings(
    s: EngineSettings, model: str | Path | None = None, *, max_num_seqs: int | None = None
) -> ScoringEngine:
    """Build the engine the settings describe. ``model`` overrides ``s.model``; with neither, the shipped
    relevance scorer (`resolve_model`)."""
    model = resolve_model(model or getattr(s, "model", None), s.cache_dir)
    dtype = resolve_dtype(s.dtype)
    if s.engine == "hf":
        dtype = dtype if dtype in ("float32", "bfloat16") else "float32"
        return HfEngine(model, dtype=dtype, max_model_len=s.max_model_len)  # type: ignore[arg-type]
    if s.engine != "vllm":
        raise ValueError(f"unknown engine {s.engine!r}: use vllm or hf")
    # vLLM's CPU backend reserves its KV cache up front (GiB): keep the default small for laptops/CI.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    return VllmEngine(
        model,
        dtype=dtype,
        max_model_len=s.max_model_len,
        enable_prefix_caching=getattr(s, "enable_prefix_caching", True),
        enforce_eager=getattr(s, "enforce_eager", False),
        kv_block_size=getattr(s, "kv_block_size", None),
        max_num_batched_tokens=getattr(s, "engine_step_tokens", None),
        **({"max_num_seqs": max_num_seqs} if max_num_seqs else {}),
    )

"""How close scoring runs to the machine's limit: model FLOPs per token, the host's dense GEMM rate at the
model's own shapes, and their ratio (model FLOPs utilisation, MFU).

- **FLOPs per scored token** (`model_flops_per_token`): 2 x the weights of every linear layer a token passes
  (attention q/k/v/o and the gated MLP; the embedding is a lookup and the yes/no head is two rows on vLLM's
  pooling path, so neither counts), plus causal attention itself: 4 x heads x head_dim x (context / 2)
  per layer for QKᵀ and AV at the average causal context.
- **GEMM rate** (`gemm_rate`): torch matmuls of ``tokens x in`` by ``in x out`` for each linear shape of the
  model, in the engine's dtype and with the same thread count, weighted by the FLOPs each shape contributes:
  the best a dense kernel does on these shapes here. A CPU's peak on paper is not reachable for
  576-wide matrices; this is.
- MFU = achieved model FLOP/s (tokens computed per second x FLOPs per token) / the GEMM rate.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ModelShape:
        heads = int(cfg["num_attention_heads"])
        return cls(
            hidden=int(cfg["hidden_size"]),
            intermediate=int(cfg["intermediate_size"]),
            layers=int(cfg["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
        )

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of each linear layer in one decoder layer."""
        h, q, kv, m = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return [(h, q), (h, kv), (h, kv), (q, h), (h, m), (h, m), (m, h)]


def model_flops_per_token(shape: ModelShape, context: float = 0.0) -> float:
    """Forward FLOPs per token at an average prompt length ``context`` (0: the linear layers only)."""
    linear = sum(2 * i * o for i, o in shape.linear_shapes())
    attention = 4 * shape.heads * shape.head_dim * (context / 2)
    return shape.layers * (linear + attention)


@dataclass(frozen=True)
class GemmRate:
    flops_s: float  # FLOP/s over the model's shapes, weighted by each shape's share of the work
    tokens: int
    dtype: str
    threads: int
    device: str
    per_shape: dict[str, float]  # "in x out" → GFLOP/s

    def row(self) -> dict[str, Any]:
        return asdict(self)


def gemm_rate(
    shape: ModelShape,
    *,
    tokens: int = 2048,
    dtype: str = "float32",
    threads: int | None = None,
    seconds: float = 1.0,
    device: str = "cpu",
) -> GemmRate:
    """The host's (or ``device``'s) dense matmul rate on the model's linear shapes (best timing per shape)."""
    import torch

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        tdtype = getattr(torch, dtype)
        per_shape: dict[str, float] = {}
        total_flops = total_s = 0.0
        for i, o in sorted(set(shape.linear_shapes())):
            x = torch.randn(tokens, i, dtype=tdtype, device=device)
            w = torch.randn(o, i, dtype=tdtype, device=device)
            flops = 2.0 * tokens * i * o
            with torch.inference_mode():
                torch.nn.functional.linear(x, w)  # warm-up: kernel selection, allocation
                sync()
                best = float("inf")
                deadline = time.perf_counter() + seconds
                while time.perf_counter() < deadline:
                    t0 = time.perf_counter()
                    torch.nn.functional.linear(x, w)
                    sync()
                    best = min(best, time.perf_counter() - t0)
            per_shape[f"{i}x{o}"] = round(flops / best / 1e9, 1)
            n = shape.linear_shapes().count((i, o))
            total_flops += n * flops
            total_s += n * best
        return GemmRate(total_flops / total_s, tokens, dtype, torch.get_num_threads(), device, per_shape)
    finally:
        torch.set_num_threads(old)


def mfu(tokens_s: float, shape: ModelShape, context: float, rate: GemmRate) -> dict[str, float]:
    """Achieved model FLOP/s at ``tokens_s`` computed tokens per second, and its share of the GEMM rate."""
    achieved = tokens_s * model_flops_per_token(shape, context)
    return {
        "tokens_s": round(tokens_s, 1),
        "gflop_per_token": round(model_flops_per_token(shape, context) / 1e9, 4),
        "achieved_gflop_s": round(achieved / 1e9, 1),
        "gemm_gflop_s": round(rate.flops_s / 1e9, 1),
        "mfu": round(achieved / rate.flops_s, 3),
    }

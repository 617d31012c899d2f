"""Scoring engines behind one small protocol.

An engine turns full prompts into P(yes). It is blocking (the worker calls it in a thread so the
event loop keeps heartbeating and fetching). Implementations:

- `VllmEngine`: vLLM's pooling runner with the yes/no classifier conversion — the production path.
- `HfEngine`: a plain transformers batch forward, the naive baseline and the reference for equality.

Both check at start-up that the model can answer yes/no with single tokens and fail with an actionable
message otherwise.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from engine.answer import answer_ids, answer_logits, p_yes
from engine.identity import ANSWER_TOKENS, ModelCapabilityError, ModelInfo, inspect_model

log = logging.getLogger(__name__)


@runtime_checkable
class ScoringEngine(Protocol):
    info: ModelInfo
    max_model_len: int
    tokenizer: Any  # a Hugging Face tokenizer: the worker builds token-id prompts with it

    def score(self, prompts: Sequence[str]) -> list[float]:
        """P(yes) for each full prompt, in order. Blocking."""
        ...

    def score_tokens(self, prompts: Sequence[Sequence[int]]) -> list[float]:
        """P(yes) for each prompt given as token ids (no special tokens added). Blocking."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts as the engine's tokenizer sees them (no special tokens added)."""
        ...

    def close(self) -> None: ...


def vllm_overrides(architecture: str) -> dict[str, object]:
    """hf_overrides that turn a causal LM into a yes/no classifier on vLLM's pooling runner."""
    if architecture.startswith("Qwen3"):
        return {
            "architectures": ["Qwen3ForSequenceClassification"],
            "classifier_from_token": list(ANSWER_TOKENS),
            "is_original_qwen3_reranker": True,
        }
    if architecture.startswith(("Llama", "Qwen2", "Mistral")):
        base = architecture.removesuffix("ForCausalLM")
        return {
            "architectures": [f"{base}ForSequenceClassification"],
            "classifier_from_token": list(ANSWER_TOKENS),
            "method": "from_2_way_softmax",
        }
    raise ModelCapabilityError(
        f"architecture {architecture!r} has no yes/no classifier conversion here; supported: Qwen3, Llama, "
        "Qwen2, Mistral causal LMs"
    )


def shutdown_llm(llm: Any) -> None:
    """Stop a ``vllm.LLM``'s engine core now (its worker processes and memory), not at garbage collection."""
    if llm is None:
        return
    engine = getattr(llm, "llm_engine", None)
    shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
    if callable(shutdown):
        shutdown()


class VllmEngine:
    """vLLM pooling runner; ``classify`` returns P(yes) from the two answer-token rows of the LM head."""

    def __init__(
        self,
        model: str | Path,
        *,
        dtype: str = "auto",
        max_model_len: int | None = None,
        enable_prefix_caching: bool = True,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int | None = None,
        gpu_memory_utilization: float = 0.85,
        seed: int = 0,
    ) -> None:
        from vllm import LLM

        self.info = inspect_model(model)
        self.max_model_len = max_model_len or min(self.info.max_position_embeddings, 4096)
        kwargs: dict[str, object] = {}
        if max_num_batched_tokens:
            kwargs["max_num_batched_tokens"] = max_num_batched_tokens
        self._llm = LLM(
            model=str(model),
            runner="pooling",
            hf_overrides=vllm_overrides(self.info.architecture),
            dtype=dtype,
            max_model_len=self.max_model_len,
            enable_prefix_caching=enable_prefix_caching,
            max_num_seqs=max_num_seqs,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
            **kwargs,
        )
        self.tokenizer = self._llm.get_tokenizer()
        # `LLM` is not thread-safe; workers call it from a thread, and tests/benchmarks may share one.
        self._lock = threading.Lock()

    def score(self, prompts: Sequence[str]) -> list[float]:
        if not prompts:
            return []
        # Same tokenization as score_tokens and the HF engine: no special tokens added.
        ids = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        return self.score_tokens(ids)

    def score_tokens(self, prompts: Sequence[Sequence[int]]) -> list[float]:
        if not prompts:
            return []
        from vllm.inputs import TokensPrompt

        with self._lock:
            outs = self._llm.classify([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], use_tqdm=False)
        return [float(o.outputs.probs[0]) for o in outs]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def reset_prefix_cache(self) -> None:
        """Forget cached KV blocks (benchmarks: a measured run must not hit an earlier run's prompts)."""
        with self._lock:
            self._llm.reset_prefix_cache()

    def close(self) -> None:
        shutdown_llm(getattr(self, "_llm", None))
        self._llm = None  # type: ignore[assignment]


class HfEngine:
    """Plain transformers forward over a padded batch: the naive baseline and the equality reference."""

    def __init__(
        self,
        model: str | Path,
        *,
        dtype: Literal["float32", "bfloat16", "auto"] = "float32",
        max_model_len: int | None = None,
        batch_size: int = 32,
        device: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.info = inspect_model(model)
        self.max_model_len = max_model_len or min(self.info.max_position_embeddings, 4096)
        self._torch = torch
        self._device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "auto": "auto"}[dtype]
        self._tok = AutoTokenizer.from_pretrained(str(model))
        self._tok.padding_side = "left"
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        self.tokenizer = self._tok
        self._model = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch_dtype).to(self._device).eval()
        self._answer_ids = answer_ids(self._tok)
        self.batch_size = batch_size

    def score(self, prompts: Sequence[str]) -> list[float]:
        return self.score_tokens(self._tok(list(prompts), add_special_tokens=False)["input_ids"])

    def score_tokens(self, prompts: Sequence[Sequence[int]]) -> list[float]:
        torch = self._torch
        pad = self._tok.pad_token_id
        out: list[float] = []
        for i in range(0, len(prompts), self.batch_size):
            chunk = [list(p) for p in prompts[i : i + self.batch_size]]
            width = max(len(p) for p in chunk)
            # Left padding: the answer position is the last column for every row.
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=self._device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=self._device)
            with torch.inference_mode():
                logits = answer_logits(self._model, {"input_ids": ids, "attention_mask": mask}, self._answer_ids)
                probs = p_yes(logits)
            out.extend(float(p) for p in probs.cpu())
        return out

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self._tok(list(texts), add_special_tokens=False)["input_ids"]]

    def close(self) -> None:
        self._model = None


def is_probability(x: float) -> bool:
    return not math.isnan(x) and 0.0 <= x <= 1.0


__all__ = [
    "ANSWER_TOKENS",
    "HfEngine",
    "ModelCapabilityError",
    "ModelInfo",
    "ScoringEngine",
    "VllmEngine",
    "inspect_model",
    "is_probability",
    "shutdown_llm",
    "vllm_overrides",
]

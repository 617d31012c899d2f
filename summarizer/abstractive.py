"""Abstractive summaries from a decoder SLM hosted in vLLM (offline `LLM.generate`, batched, greedy).

Default model: SmolLM2-135M-Instruct, converted offline from the packaged GGUF (`engine.models`). The
prompt goes through the tokenizer's own chat template. The posting is cut to `max_input_tokens` by us
(vLLM's truncation would keep the end of the prompt and drop the instruction).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from schemas import JobPosted

log = logging.getLogger(__name__)

SYSTEM = (
    "You summarize job postings for a job search engine. Write two or three short sentences: what the "
    "job is, the main duties, and the required skills and experience. Leave out benefits, company "
    "marketing, equal-opportunity statements and how to apply."
)


class Generator(Protocol):
    def summarize(self, postings: Sequence[JobPosted], max_tokens: int) -> list[str]:
        """One summary per posting, in order. Blocking."""
        ...

    def close(self) -> None: ...


def user_message(p: JobPosted, description: str) -> str:
    head = "\n".join(
        f"{k}: {v}" for k, v in (("Title", p.title), ("Company", p.company), ("Location", p.location)) if v
    )
    return f"{head}\n\nJob posting:\n{description}\n\nSummarize this job posting."


class VllmGenerator:
    """A small wrapper over `vllm.LLM` for greedy batched generation; one instance per process."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        max_input_tokens: int = 1536,
        max_model_len: int = 2048,
        dtype: str = "auto",
        max_num_seqs: int = 32,
        seed: int = 0,
        enforce_eager: bool = False,
    ) -> None:
        """``enforce_eager`` skips torch.compile warm-up: a faster start (tests), slower generation."""
        from vllm import LLM

        if model is None:
            from engine.models import smollm2_dir

            model = smollm2_dir()
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        self.model = str(model)
        self.max_input_tokens = max_input_tokens
        self.max_model_len = max_model_len
        self._llm = LLM(
            model=self.model,
            dtype=dtype,
            max_model_len=max_model_len,
            max_num_seqs=max_num_seqs,
            seed=seed,
            enable_prefix_caching=True,
            enforce_eager=enforce_eager,
        )
        self.tokenizer = self._llm.get_tokenizer()
        log.info("abstractive generator ready", extra={"model": self.model})

    def _cut(self, text: str) -> str:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) <= self.max_input_tokens:
            return text
        return self.tokenizer.decode(ids[: self.max_input_tokens])

    def prompts(self, postings: Sequence[JobPosted]) -> list[str]:
        out = []
        for p in postings:
            messages = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": user_message(p, self._cut(p.description))},
            ]
            out.append(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        return out

    def summarize(self, postings: Sequence[JobPosted], max_tokens: int) -> list[str]:
        from vllm import SamplingParams

        if not postings:
            return []
        # Room for the answer inside the context window, whatever the prompt length.
        max_tokens = max(1, min(max_tokens, self.max_model_len - self.max_input_tokens - 160))
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, seed=0)
        outs = self._llm.generate(self.prompts(postings), params, use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outs]

    def close(self) -> None:
        from engine.engines import shutdown_llm

        shutdown_llm(getattr(self, "_llm", None))
        self._llm = None  # type: ignore[assignment]

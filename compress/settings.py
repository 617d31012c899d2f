"""Settings shared by the ``compress-*`` commands (flags or ``JOBSCORE_<NAME>`` environment variables)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from jobscore.settings import ToolSettings


class CompressSettings(ToolSettings):
    threads: int = Field(2, ge=1, le=64, description="Torch CPU threads for training and pruning.")
    engine: Literal["vllm", "hf"] = Field(
        "vllm", description="Evaluation engine: vllm (the worker's production path) or hf (plain transformers)."
    )
    dtype: str = Field("float32", description="Evaluation dtype (float32 makes engines comparable).")
    max_model_len: int = Field(1024, ge=64, description="Longest prompt the evaluation engine accepts.")
    max_len: int = Field(
        256, ge=32, description="Training/calibration prompt cap in tokens (longer: cut at the start)."
    )
    max_doc_chars: int = Field(
        600, ge=50, description="Raw job text is cut here (on a word) before prompting: longer costs CPU time."
    )
    summary_budget_tokens: int = Field(128, ge=16, description="Token budget of the summarizer in 'summary' mode.")
    seed: int = Field(0, description="Seed for data generation, shuffling and initialisation.")

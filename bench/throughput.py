"""Measured items/s per model and platform: the figures `jobscore capacity` sizes fleets from.

``bench/results/throughput.json`` holds one row per measurement recorded in bench/RESULTS.md (model, platform,
machine, items/s at a prompt length, date, the command and the RESULTS section). `newest` picks the latest row
for a model and platform; `jobscore capacity` prints which one it used, and refuses to guess where none exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

REGISTRY = Path(__file__).resolve().parent / "results" / "throughput.json"


@dataclass(frozen=True)
class Measured:
    model: str  # a model name the worker accepts (scorer-full, scorer-pruned) or a bench config (qwen3-0.6b)
    platform: str  # "cpu" or "gpu"
    machine: str
    items_per_s: float  # pairs/s through the worker's scoring path (prefix reuse on)
    tokens: int  # mean prompt tokens per pair of the workload it was measured on
    date: str  # ISO date
    source: str  # the bench/RESULTS.md section and the command

    def describe(self) -> str:
        return f"{self.items_per_s:g} items/s at {self.tokens} tokens/pair, {self.machine}, {self.date} ({self.source})"


def load(path: Path = REGISTRY) -> list[Measured]:
    return [Measured(**row) for row in json.loads(path.read_text())["figures"]]


def newest(model: str, platform: str, path: Path = REGISTRY) -> Measured | None:
    rows = [m for m in load(path) if m.model == model and m.platform == platform]
    return max(rows, key=lambda m: m.date) if rows else None

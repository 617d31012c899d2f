"""Sentence embeddings with the packaged all-MiniLM-L6-v2 (mean pooling, L2-normalised), on CPU.

Used to rank a posting's sentences by similarity to what it is about (title + skills) and, in the
benchmark, as the bi-encoder relevance baseline. Loading takes ~1 s; ~1,000 short sentences/s on two
cores, so embedding is the dominant cost of extractive summarization but far below abstractive.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np


class MiniLM:
    def __init__(
        self,
        path: str | Path | None = None,
        max_length: int = 128,
        batch_size: int = 64,
        cache_size: int = 50_000,
        num_threads: int | None = 1,
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from engine.models import minilm_dir

        if num_threads:
            # Small batches of short sentences do not scale across OpenMP threads, and on a busy
            # machine spinning threads make it far worse (measured here: 1 thread 0.32 s vs 2 threads
            # 1.8 s per 64 sentences under load). Scale out with summarizer processes instead.
            torch.set_num_threads(num_threads)
        d = str(path or minilm_dir())
        self.tokenizer = AutoTokenizer.from_pretrained(d)
        self.model = AutoModel.from_pretrained(d, dtype=torch.float32).eval()
        self.max_length = max_length
        self.batch_size = batch_size
        self.dim = int(self.model.config.hidden_size)
        # One model shared by the service's worker thread and anyone else: torch modules are not
        # re-entrant across threads for our purposes, so serialise calls.
        self._model_lock = threading.Lock()
        self._lock = threading.Lock()  # guards the cache
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, unit rows.

        Postings repeat sentences (benefits, EEO statements, company blurbs) within and across
        postings: each distinct sentence is encoded once, and recent ones come from an LRU cache.
        """
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        todo: dict[str, list[int]] = {}
        with self._lock:
            for i, t in enumerate(texts):
                v = self._cache.get(t)
                if v is not None:
                    self._cache.move_to_end(t)
                    out[i] = v
                else:
                    todo.setdefault(t, []).append(i)
        if todo:
            uniq = list(todo)
            vecs = self._encode(uniq)
            with self._lock:
                for t, v in zip(uniq, vecs, strict=True):
                    out[todo[t]] = v
                    self._cache[t] = v
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return out

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        """Sorted by length inside so batches pad little."""
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with self._model_lock, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.numpy()
        return out

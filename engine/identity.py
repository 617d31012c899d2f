"""Model identity: which model a ranking came from, read from and written to one sidecar file.

Every model directory the project builds (tiny test model, converted SmolLM2, SFT/distilled, pruned,
merged scorer) carries ``jobscore_model.json`` beside ``config.json``: ``model_id`` and ``revision``
end up in every `Ranking`, the rest records how the model was made. This module is its only reader and
writer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IDENTITY_FILE = "jobscore_model.json"
ANSWER_TOKENS = ("no", "yes")  # the score is P(yes) over these two tokens, in this order


class ModelCapabilityError(RuntimeError):
    """The model cannot be served on the yes/no scoring path."""


@dataclass(frozen=True)
class ModelInfo:
    path: str
    model_id: str
    revision: str
    architecture: str
    max_position_embeddings: int


def read_identity(model_dir: str | Path) -> dict[str, Any]:
    """The sidecar's content, or {} for a directory without one (a plain HF model)."""
    f = Path(model_dir) / IDENTITY_FILE
    return json.loads(f.read_text()) if f.exists() else {}


def write_identity(model_dir: str | Path, *, model_id: str, revision: str, **extra: Any) -> None:
    (Path(model_dir) / IDENTITY_FILE).write_text(
        json.dumps({"model_id": model_id, "revision": revision, **extra}, indent=2)
    )


def derive_identity(source_dir: str | Path, out_dir: str | Path, *, model_id: str, revision: str, **extra: Any) -> None:
    """Write the identity of a model made from ``source_dir`` (kept fields + the new ones)."""
    meta = read_identity(source_dir)
    meta.update({"model_id": model_id, "revision": revision, "base": str(source_dir), **extra})
    write_identity(out_dir, **meta)


def source_model_id(source_dir: str | Path) -> str:
    return str(read_identity(source_dir).get("model_id", Path(source_dir).name))


def inspect_model(path: str | Path) -> ModelInfo:
    """Read a model directory's identity and check the yes/no answer tokens are single tokens."""
    from transformers import AutoTokenizer

    p = Path(path)
    cfg_file = p / "config.json"
    if not cfg_file.exists():
        raise ModelCapabilityError(f"{p} is not a model directory (no config.json)")
    cfg = json.loads(cfg_file.read_text())
    archs = cfg.get("architectures") or []
    arch = archs[0] if archs else "?"
    tok = AutoTokenizer.from_pretrained(str(p))
    for t in ANSWER_TOKENS:
        ids = tok.encode(t, add_special_tokens=False)
        tid = tok.convert_tokens_to_ids(t)
        if len(ids) != 1 or tid is None or tid == tok.unk_token_id:
            raise ModelCapabilityError(
                f"model {p}: the answer token {t!r} is not a single token (encodes to {ids}); the scorer "
                "reads P(yes) from the 'yes'/'no' logits at the answer position, so the tokenizer must have "
                "both as standalone tokens"
            )
    meta = read_identity(p)
    return ModelInfo(
        path=str(p),
        model_id=meta.get("model_id", p.name),
        revision=meta.get("revision", cfg.get("_name_or_path", "") or p.name),
        architecture=arch,
        max_position_embeddings=int(cfg.get("max_position_embeddings", 4096)),
    )

"""Which model directory a ``compress-*`` model argument names, and the directory an adapter is scored as.

The commands take a model as a directory or a short name (``smollm2``, ``tiny``, a shipped scorer); the
offline tools resolve it here so that every command (prune, sft, eval, merge, extract, pipeline) means the
same weights by the same name. Imports of engine stay inside the functions: resolving a name may convert or
build a model (torch), which ``jobscore --help`` must not pay for.
"""

from __future__ import annotations

from pathlib import Path

from compress.settings import CompressSettings


def resolve_model_arg(value: str, cache_dir: Path | None = None) -> Path:
    """A model directory, ``smollm2`` / ``tiny`` for the packaged models, or a shipped scorer's name
    (``scorer-full``, ``scorer-pruned``, ``scorer``).

    ``smollm2`` is the float32 conversion of the packaged GGUF: the weights adapters are trained and merged on
    (their manifests bind its hash). Shipped scorers are built under ``cache_dir`` (default: the settings' from
    the environment) on first use; anything else is taken as a path.
    """
    if value == "smollm2":
        from engine.models import smollm2_dir

        return smollm2_dir(dtype="float32")
    from engine.factory import MODEL_NAMES, resolve_model

    if value in MODEL_NAMES:
        return resolve_model(value, cache_dir if cache_dir is not None else CompressSettings().cache_dir)
    return Path(value)


def scorer_dir(path: Path, base: str) -> Path:
    """A model directory as is; an adapter directory (``adapter_config.json``) merged into ``base`` first
    (cached under ~/.cache/jobscore/merged/<version>-<adapter sha>), so it is scored exactly as served: the
    worker serves the merged weights, never a runtime adapter."""
    if not (path / "adapter_config.json").exists():
        return path
    from compress.lora import merge_adapter, read_manifest
    from engine.identity import read_identity
    from engine.tinymodel import default_cache_dir

    m = read_manifest(path)
    out = default_cache_dir() / "merged" / f"{m['adapter_version']}-{m['adapter_sha256'][:12]}"
    if not read_identity(out):
        merge_adapter(resolve_model_arg(base), path, out)
    return out

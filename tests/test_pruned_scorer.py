"""The pruned scorer ships as committed files (kept neurons + re-fitted down projections, engine/scorer_pruned) and
is rebuilt from them on first use: packing and rebuilding give the pruned model back, a damaged file or another
parent is refused with what to do, and the shipped one builds, names itself, has the pruned width and ranks
held-out occupations (docs/models.md "Models", bench/RESULTS.md "The pruned scorer")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from compress.prune import prune_model
from compress.ship import pack_pruned
from engine.pruned_scorer import SHIPPED_PRUNED, WEIGHTS_FILE, PrunedManifest, build_pruned, check_scores
from engine.scorer import ScorerBuildError


@pytest.fixture(scope="module")
def packed(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny model pruned to half its MLP width (magnitude: no calibration needed), then packed."""
    tmp = tmp_path_factory.mktemp("pruned")
    pruned = tmp / "pruned"
    prune_model(tiny_model, pruned, 0.5, "magnitude")
    files = tmp / "files"
    pack_pruned(tiny_model, pruned, files, version="tiny-pruned-test", parent_adapter="none")
    return pruned, files


def _scores(model_dir: Path, prompts: list[str]) -> list[float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    return check_scores(model, AutoTokenizer.from_pretrained(str(model_dir)), prompts)


def test_pack_then_build_gives_the_pruned_model_back(
    tiny_model: Path, packed: tuple[Path, Path], tmp_path: Path
) -> None:
    pruned, files = packed
    m = PrunedManifest.read(files)
    cfg = json.loads((tiny_model / "config.json").read_text())
    assert m.width == cfg["intermediate_size"] // 2 and len(m.check_prompts) == 8
    out = build_pruned(tiny_model, files, tmp_path / "built")
    built_cfg = json.loads((out / "config.json").read_text())
    assert built_cfg["intermediate_size"] == m.width
    identity = json.loads((out / "jobscore_model.json").read_text())
    assert identity["revision"] == "tiny-pruned-test" and identity["pruning"]["width"] == m.width
    # The down projection travels in float16: the rebuilt model scores like the pruned one within that rounding.
    prompts = m.check_prompts
    assert _scores(out, prompts) == pytest.approx(_scores(pruned, prompts), abs=2e-3)
    assert _scores(out, prompts) == pytest.approx(m.check_scores, abs=1e-6)


def test_a_damaged_weights_file_is_refused(tiny_model: Path, packed: tuple[Path, Path], tmp_path: Path) -> None:
    _, files = packed
    bad = tmp_path / "files"
    shutil.copytree(files, bad)
    data = bytearray((bad / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (bad / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ScorerBuildError, match="damaged or a Git LFS pointer"):
        build_pruned(tiny_model, bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_another_parent_is_refused_by_the_check_scores(
    tiny_model: Path, packed: tuple[Path, Path], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, files = packed
    # Same architecture, other weights: what a changed adapter or base would give.
    other = tmp_path / "other"
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.model.norm.parameters():
            p.mul_(3.0).add_(torch.randn_like(p))
    model.save_pretrained(other)
    AutoTokenizer.from_pretrained(str(tiny_model)).save_pretrained(other)
    shutil.copy(tiny_model / "jobscore_model.json", other / "jobscore_model.json")
    with pytest.raises(ScorerBuildError, match="check prompts up to"):
        build_pruned(other, files, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_shipped_pruned_files_are_small_and_name_their_parent() -> None:
    from engine.scorer import SHIPPED_ADAPTER, AdapterManifest, sha256_file

    m = PrunedManifest.read(SHIPPED_PRUNED)
    assert m.parent_adapter == AdapterManifest.read(SHIPPED_ADAPTER).version
    weights = SHIPPED_PRUNED / WEIGHTS_FILE
    assert weights.stat().st_size <= 40 * 1024 * 1024  # the bound on committed weights
    assert sha256_file(weights) == m.weights_sha256
    assert m.raw["command"][:2] == ["jobscore", "compress-prune"]  # reproducible: how the weights were made
    assert m.raw["metrics"]["heldout_hard"]["auc"] > 0.9

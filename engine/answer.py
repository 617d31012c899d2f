"""P(yes) from a Hugging Face causal LM: the two answer rows of the LM head at the answer position.

Shared by the HF engine (inference) and compress/ (SFT, distillation, teacher labels), so the score a
model is trained on is computed exactly like the score it is served with. Only the ["no", "yes"] rows
are multiplied: the full-vocabulary logits are never computed.
"""

from __future__ import annotations

from typing import Any

from engine.identity import ANSWER_TOKENS


def answer_ids(tokenizer: Any) -> tuple[int, int]:
    """Token ids of ("no", "yes"), in that order."""
    no, yes = (int(tokenizer.convert_tokens_to_ids(t)) for t in ANSWER_TOKENS)
    return no, yes


def answer_logits(model: Any, enc: dict[str, Any], ids: tuple[int, int]) -> Any:
    """(batch, 2) logits of ["no", "yes"] at the last position (left padding: the answer position)."""
    hidden = model.model(**enc).last_hidden_state[:, -1, :]
    w = model.lm_head.weight[list(ids)]
    return hidden @ w.T


def p_yes(logits: Any) -> Any:
    """P(yes) from (batch, 2) answer logits, in float32."""
    import torch

    return torch.softmax(logits.float(), dim=-1)[:, 1]

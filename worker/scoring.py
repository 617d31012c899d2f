"""The engine as the worker uses it: one bad prompt never takes the worker down, a lost engine does.

If the engine rejects a batch, its prompts are retried one by one and the ones it rejects alone score
None (they become ``engine_error`` candidate errors). A prompt that fails alone looks like a lost device,
so a canary — a fixed, ordinary prompt — tells the two apart: if it still scores, only those prompts were
bad and the worker keeps serving instead of crash-looping on a poison request; if it fails too, the
engine is gone (`EngineFailure`: the worker stops without committing and another replica answers).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from engine.engines import ScoringEngine, is_probability

log = logging.getLogger(__name__)


class EngineFailure(RuntimeError):
    """The engine could not score anything: the worker must not commit and should exit."""


class GuardedEngine:
    """``engine`` with poison isolation and the canary check (module docstring). Blocking: run it in a thread."""

    def __init__(self, engine: ScoringEngine, canary: Sequence[int]) -> None:
        self.engine = engine
        self.canary = list(canary)
        # Once the engine is found gone, every call (other batches in flight included) fails at once instead of
        # retrying its prompts one by one against a lost device.
        self.failed: EngineFailure | None = None

    def score(self, prompts: Sequence[Sequence[int]], priority: int | None = None) -> list[float | None]:
        """P(yes) per prompt; None for a prompt the engine rejects while it still scores the canary.
        ``priority``: for an engine that schedules by priority (``supports_priority``), lower first."""
        if self.failed is not None:
            raise self.failed
        try:
            return list(self._checked(self._score(prompts, priority)))
        except Exception as batch_error:
            if len(prompts) == 1:
                self._probe(batch_error)
                return [None]
            log.warning(
                "engine rejected a batch; retrying its prompts one by one",
                extra={"size": len(prompts), "error": repr(batch_error)},
            )
        out: list[float | None] = []
        last: Exception | None = None
        for p in prompts:
            if self.failed is not None:
                raise self.failed
            try:
                out.append(self._checked(self._score([p], priority))[0])
            except Exception as e:
                out.append(None)
                last = e
        if all(s is None for s in out):
            self._probe(last or RuntimeError("every prompt failed"))
        return out

    def _score(self, prompts: Sequence[Sequence[int]], priority: int | None) -> list[float]:
        if priority is None:
            return self.engine.score_tokens(prompts)
        return self.engine.score_tokens(prompts, priority)  # type: ignore[call-arg]  # supports_priority engines

    def _probe(self, error: Exception) -> None:
        """Raise `EngineFailure` unless the engine still scores the canary prompt (then ``error`` was the
        prompts', not the engine's)."""
        try:
            self._checked(self.engine.score_tokens([self.canary]))
        except Exception as canary_error:
            self.failed = EngineFailure(f"engine failed: {error}; the canary prompt fails too: {canary_error}")
            raise self.failed from error
        log.warning(
            "engine rejected a prompt it cannot score; answering it as an engine error", extra={"error": repr(error)}
        )

    @staticmethod
    def _checked(scores: Sequence[float]) -> Sequence[float]:
        bad = [s for s in scores if not is_probability(s)]
        if bad:
            raise ValueError(f"engine returned non-probabilities: {bad[:3]}")
        return scores

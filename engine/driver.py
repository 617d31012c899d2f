"""One thread that drives vLLM's engine, so several callers share its steps and online work goes first.

``vllm.LLM.classify`` runs the engine to completion for one list of prompts and takes no priority, so a
worker calling it scores one batch at a time: an online request that arrives while a bulk batch runs waits
for the whole batch. Here the engine (``LLM.llm_engine``, vLLM's V1 ``LLMEngine``) is stepped by one thread
and callers only add requests: each prompt is its own engine request with a priority (lower goes first,
vLLM's convention), the engine runs with ``scheduling_policy="priority"``, and its scheduler picks the
waiting online prompts before any waiting bulk prompt at every step — and preempts running bulk requests
when the KV cache runs short. An online prompt therefore waits for at most the engine step in progress
(bounded by ``max_num_batched_tokens``), not for a batch.

Thread-safety: ``LLMEngine`` is not thread-safe; only the driver thread touches it. Callers hand work over
through a queue and wait on their own event. A step that raises means the engine is gone: every waiting
caller gets the error, and so does every later call.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

ONLINE_PRIORITY = 0  # vLLM schedules lower values first
BULK_PRIORITY = 1


@dataclass(eq=False)
class _Call:
    """One caller's prompts: filled in by the driver, waited for by the caller."""

    prompts: Sequence[Sequence[int]]
    priority: int
    scores: list[float] = field(default_factory=list)
    left: int = 0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(eq=False)
class _Task:
    """A function to run on the driver thread between steps (e.g. resetting the prefix cache)."""

    fn: Callable[[], Any]
    result: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class EngineDriver:
    """Steps a vLLM ``LLMEngine`` on its own thread; `classify` may be called from any number of threads."""

    def __init__(self, engine: Any, params: Any, tokens_prompt: Callable[[list[int]], Any]) -> None:
        self._engine = engine
        self._params = params  # PoolingParams(task="classify"), cloned by vLLM per request
        self._tokens_prompt = tokens_prompt
        self._cond = threading.Condition()
        self._queue: deque[_Call | _Task] = deque()
        self._inflight: dict[str, tuple[_Call, int]] = {}  # engine request id → (call, prompt index)
        self._ids = itertools.count()
        self._broken: BaseException | None = None
        self._stopping = False
        self.prompt_tokens = 0  # prompt tokens scored, all calls
        self.cached_tokens = 0  # of those, served from the prefix cache (KV blocks reused, not computed)
        self.steps = 0  # engine steps whose output the driver processed
        self._thread = threading.Thread(target=self._run, name="vllm-driver", daemon=True)
        self._thread.start()

    @property
    def in_engine(self) -> int:
        """Prompts handed to the engine and not yet scored."""
        return len(self._inflight)

    def classify(self, prompts: Sequence[Sequence[int]], priority: int = ONLINE_PRIORITY) -> list[float]:
        """P(yes) per prompt, in order, scored at ``priority``. Blocks until all are scored."""
        if not prompts:
            return []
        call = _Call(prompts, priority, [0.0] * len(prompts), len(prompts))
        self._submit(call)
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.scores

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the driver thread and return its result (calls into the engine core, such as resetting
        the prefix cache, are handled there between two of its steps)."""
        task = _Task(fn)
        self._submit(task)
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.result

    def close(self) -> None:
        """Stop the thread (waiting callers get an error). The engine itself is shut down by its owner."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    def _submit(self, work: _Call | _Task) -> None:
        with self._cond:
            if self._broken is not None:
                raise RuntimeError(f"the engine is gone: {self._broken!r}") from self._broken
            if self._stopping:
                raise RuntimeError("the engine is closed")
            self._queue.append(work)
            self._cond.notify()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._inflight and not self._stopping:
                        self._cond.wait()
                    if self._stopping:
                        break
                    work = list(self._queue)
                    self._queue.clear()
                self._hand_over(work)
                if self._inflight:
                    self._wait_for_step()
                    self._step()
        except BaseException as e:  # the engine is gone: nobody may wait forever
            log.error("the engine driver stopped: %r", e)
            self._break(e)
            return
        self._break(RuntimeError("the engine was closed while requests were waiting"))

    def _hand_over(self, work: Sequence[_Call | _Task]) -> None:
        for w in work:
            if isinstance(w, _Task):
                self._run_task(w)
            else:
                self._add(w)

    def _wait_for_step(self) -> None:
        """Until the step in progress has output, keep handing new calls to the engine.

        With vLLM's engine core in its own process (the default), the core steps on its own and takes new
        requests between two steps; ``LLMEngine.step()`` only waits for the next step's output. A call that
        arrived while the driver waited there would reach the core only after that step — by then the core has
        started the next one, full of bulk prompts — so an online prompt would wait two steps. Handing it over
        while the step runs lets the core schedule it at the very next step. The wait polls the client's
        output queue every millisecond (the core's steps take tens of milliseconds on CPU, a few on GPU); an
        in-process core (no output queue) steps synchronously and needs none of this."""
        outputs = getattr(getattr(self._engine, "engine_core", None), "outputs_queue", None)
        if outputs is None:
            return
        while outputs.empty():
            with self._cond:
                if not self._queue and not self._stopping:
                    self._cond.wait(timeout=0.001)
                if self._stopping:
                    return
                work = list(self._queue)
                self._queue.clear()
            self._hand_over(work)

    def _run_task(self, task: _Task) -> None:
        try:
            task.result = task.fn()
        except Exception as e:
            task.error = e
        task.done.set()

    def _add(self, call: _Call) -> None:
        added: list[str] = []
        try:
            for i, prompt in enumerate(call.prompts):
                rid = f"s{next(self._ids)}"  # no "-": vLLM appends its own suffix after one
                self._engine.add_request(rid, self._tokens_prompt(list(prompt)), self._params, priority=call.priority)
                self._inflight[rid] = (call, i)
                added.append(rid)
        except Exception as e:  # a prompt the engine refuses (too long, a token out of vocabulary): the call fails
            for rid in added:
                self._inflight.pop(rid, None)
            if added:
                self._engine.abort_request(added)
            call.error = e
            call.done.set()

    def _step(self) -> None:
        from vllm.outputs import ClassificationOutput

        outputs = self._engine.step()
        self.steps += 1
        for out in outputs:
            entry = self._inflight.pop(out.request_id, None)
            if entry is None or not out.finished:
                continue
            call, i = entry
            self.prompt_tokens += len(call.prompts[i])
            self.cached_tokens += int(getattr(out, "num_cached_tokens", 0) or 0)
            try:
                call.scores[i] = float(ClassificationOutput.from_base(out.outputs).probs[0])
            except Exception as e:  # a malformed output fails its call, not the engine
                call.error = e
            call.left -= 1
            if call.left == 0 or call.error is not None:
                if call.error is not None:
                    self._drop(call)
                call.done.set()

    def _drop(self, call: _Call) -> None:
        """Abort a failed call's other requests still in the engine."""
        rids = [rid for rid, (c, _) in self._inflight.items() if c is call]
        for rid in rids:
            del self._inflight[rid]
        if rids:
            self._engine.abort_request(rids)

    def _break(self, error: BaseException) -> None:
        with self._cond:
            self._broken = error
            waiting = [c for c, _ in self._inflight.values()] + list(self._queue)
            self._inflight.clear()
            self._queue.clear()
        for w in waiting:
            w.error = error
            w.done.set()

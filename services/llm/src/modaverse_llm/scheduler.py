"""The model thread of the transformers backend: its queue, who joins the batch when, and failures.

One thread owns the model and loops: run the control calls that are due (adapter loads and unloads,
between steps), run the chosen tokens through the model, admit waiting requests, choose every row's
next token. Two policies decide when a waiting request joins:

- ``continuous`` (default): at a next step, oldest first, while rows (``max_rows``) and KV
  positions (``max_kv_tokens``) allow; finished rows leave at once, so a request never waits for a
  whole batch. Joining costs a prefill (a model call of its own), so into a running batch requests
  join together: once a quarter of the running rows' number wait (at least one, so a small batch
  takes a newcomer at the next step), the free rows would all be filled, or the oldest has waited
  ``join_wait_ms``. One prefill per arrival would otherwise nearly double the model calls of a
  busy batch (bench/llm.py: 0.94x static tokens/s at 32 clients without it).
- ``static``: only once the batch is empty, all that wait (up to ``max_rows``) together; the engine's
  behaviour before continuous batching, kept to fall back on and to compare against (bench/llm.py).

Running requests' deltas and outcomes go through the engine's ``Outbox``, handed over once per
iteration: one wake-up of each caller's event loop, the deltas before the outcome.

Beyond ``max_queue`` waiting requests a new one is refused at once (ResourceExhausted: retry later);
one that alone would need more KV positions than allowed is refused at once too (InvalidArgument:
waiting cannot help, the request must ask for fewer tokens).

Out of memory (``torch.OutOfMemoryError``): while prefilling, the joining requests fail with
ResourceExhausted; during a step, the youngest row does and the step is retried without it. The
memory is released (also the CUDA allocator's cached blocks) and the other rows go on. Any other
error fails the rows it touched (INTERNAL) and the thread serves on with an empty batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch

from modaverse_runtime import metrics as runtime_metrics
from modaverse_runtime.devices import release_memory
from modaverse_runtime.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable

from . import metrics
from .engine import Engine, Job, steps_allowed
from .types import Completion

log = logging.getLogger(__name__)

T = TypeVar("T")
QUEUE = "llm"  # the runtime metrics' queue label (autoscalers key on modaverse_queue_depth)
JOIN_TIMEOUT_S = 30.0


class Policy(enum.Enum):
    CONTINUOUS = "continuous"
    STATIC = "static"


@dataclass(eq=False)
class _Pending(Generic[T]):
    """A caller waiting on the loop for something the model thread does."""

    future: asyncio.Future[T]
    loop: asyncio.AbstractEventLoop

    def settle(self, outcome: T | BaseException) -> None:
        """From any thread."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(_settle, self.future, outcome)


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


@dataclass(eq=False)
class _Request(_Pending[Completion]):
    job: Job
    since: float = field(default_factory=time.monotonic)  # when it was queued


@dataclass(eq=False)
class _Call(_Pending[Any]):
    fn: Callable[[], Any]
    due: Callable[[], bool]


class Scheduler:
    def __init__(
        self,
        engine: Engine,
        *,
        policy: Policy,
        max_queue: int,
        admissible: Callable[[str], bool],
        join_wait_ms: float = 0.0,
    ) -> None:
        """``admissible(adapter)``: whether a waiting request's adapter may still run (it may have
        been unloaded while the request waited)."""
        self.engine = engine
        self.policy = policy
        self.max_queue = max_queue
        self.join_wait_s = join_wait_ms / 1000
        self._admissible = admissible
        self._cond = threading.Condition()
        self._waiting: deque[_Request] = deque()
        self._calls: list[_Call] = []
        self._running: dict[Job, _Request] = {}  # model thread only
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="llm-model", daemon=True)
        self._thread.start()

    # -- on the event loop --------------------------------------------------------------------------
    def submit(self, job: Job) -> asyncio.Future[Completion]:
        """Queue ``job``; its future gets the Completion or the error. Raises at once when the queue
        is full, the request can never fit, or the scheduler is shut down."""
        engine = self.engine
        alone = job.prompt.length + steps_allowed(job, engine.h.context_length)
        if alone > engine.max_kv_tokens:  # never fits, however long it waits: the request must change
            raise InvalidArgument(
                f"this request needs {alone} KV-cache positions (prompt + max_tokens); the server allows "
                f"{engine.max_kv_tokens} (MODAVERSE_MAX_KV_TOKENS): ask for fewer max_tokens"
            )
        loop = asyncio.get_running_loop()
        request = _Request(loop.create_future(), loop, job)
        with self._cond:
            if self._closed:
                raise Unavailable("llm is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise ResourceExhausted(f"llm queue is full ({self.max_queue} requests waiting); retry later")
            self._waiting.append(request)
            self._gauge()
            self._cond.notify()
        request.future.add_done_callback(lambda f: self._discard(request) if f.cancelled() else None)
        return request.future

    async def call(self, fn: Callable[[], T], due: Callable[[], bool] = lambda: True) -> T:
        """Run ``fn`` on the model thread between two steps, at the first one where ``due()`` holds."""
        loop = asyncio.get_running_loop()
        call = _Call(loop.create_future(), loop, fn, due)
        with self._cond:
            if self._closed:
                raise Unavailable("llm is shutting down")
            self._calls.append(call)
            self._cond.notify()
        result: T = await call.future
        return result

    def _discard(self, request: _Request) -> None:
        """A waiting caller went away: it leaves the queue and frees its place."""
        with self._cond:
            with contextlib.suppress(ValueError):
                self._waiting.remove(request)
            self._gauge()

    async def close(self) -> None:
        """Refuse new work; waiting and running callers get Unavailable."""
        await asyncio.to_thread(self.stop)

    def stop(self) -> None:
        with self._cond:
            self._closed = True
            left, self._waiting = list(self._waiting), deque()
            calls, self._calls = self._calls, []
            self._gauge()
            self._cond.notify()
        for pending in [*left, *calls]:
            pending.settle(Unavailable("llm shut down"))
        if self._thread is not threading.current_thread():
            self._thread.join(JOIN_TIMEOUT_S)

    def _gauge(self) -> None:
        runtime_metrics.QUEUE_DEPTH.labels(QUEUE).set(len(self._waiting))

    # -- on the model thread ------------------------------------------------------------------------
    def _serve(self) -> None:
        with torch.inference_mode():
            while self._iterate():
                pass
        for row in self.engine.clear():
            self._fail(row.job, Unavailable("llm shut down"))
        self.engine.outbox.flush()
        metrics.RUNNING_ROWS.set(0)
        metrics.KV_POSITIONS.set(0)

    def _iterate(self) -> bool:
        engine = self.engine
        with self._cond:
            while not (self._closed or engine.rows or self._waiting or any(c.due() for c in self._calls)):
                self._cond.wait()
            if self._closed:
                return False
            due = [c for c in self._calls if c.due()]
            self._calls = [c for c in self._calls if c not in due]
        for call in due:
            try:
                call.settle(call.fn())
            except Exception as exc:  # the caller's error (e.g. an adapter that does not fit)
                call.settle(exc)
        self._guarded(self._forward)
        with self._cond:
            joining = self._take()
        if joining:
            self._guarded(lambda: self._admit(joining), joining)
        if engine.rows:
            self._guarded(self._sample)
        engine.outbox.flush()  # this iteration's deltas and results: one hand-over per event loop
        metrics.RUNNING_ROWS.set(len(engine.rows))
        metrics.KV_POSITIONS.set(engine.kv_positions)
        return True

    def _take(self) -> list[_Request]:
        """The waiting requests that join now (under the lock)."""
        engine = self.engine
        if self.policy is Policy.STATIC and engine.rows:
            return []
        if engine.rows and not self._join_due():
            return []
        joining: list[_Request] = []
        while self._waiting and len(engine.rows) + len(joining) < engine.max_rows:
            head = self._waiting[0]
            if head.future.done():  # cancelled while waiting
                self._waiting.popleft()
                continue
            if not self._admissible(head.job.adapter):
                self._waiting.popleft()
                head.settle(NotFound(f"adapter {head.job.adapter!r} was unloaded while the request waited"))
                continue
            crowded = engine.rows or joining
            if crowded and engine.kv_needed([*(r.job for r in joining), head.job]) > engine.max_kv_tokens:
                break  # the oldest waits for rows to leave; nobody overtakes it
            joining.append(self._waiting.popleft())
        if joining:
            runtime_metrics.BATCH_SIZE.labels(QUEUE).observe(len(joining))
        self._gauge()
        return joining

    def _join_due(self) -> bool:
        """Continuous policy, rows running: whether the waiting requests join at this step (under the lock)."""
        if not self._waiting:
            return False
        running, waiting = len(self.engine.rows), len(self._waiting)
        if waiting >= max(1, running // 4) or waiting >= self.engine.max_rows - running:
            return True
        return time.monotonic() - self._waiting[0].since >= self.join_wait_s

    def _admit(self, joining: list[_Request]) -> None:
        for request in joining:
            self._running[request.job] = request
        rows = self.engine.admit([r.job for r in joining])
        for row in rows:
            if row.result is not None:  # cancelled before it ran
                self._finish(row.job, row.result)

    def _forward(self) -> None:
        while self.engine.needs_forward:
            out_of_memory = False
            try:
                self.engine.forward()
            except torch.OutOfMemoryError:
                out_of_memory = True  # handled outside the except block, so the traceback's tensors are gone
            if out_of_memory:
                self._evict_youngest()

    def _sample(self) -> None:
        out_of_memory = False
        try:
            finished = self.engine.sample()
        except torch.OutOfMemoryError:
            out_of_memory = True
        if out_of_memory:
            self._evict_youngest()  # the next iteration samples the others again
            return
        for row in finished:
            assert row.result is not None
            self._finish(row.job, row.result)

    def _evict_youngest(self) -> None:
        row = self.engine.evict_youngest()
        log.warning("llm: out of memory during a step; the youngest of %d rows fails", len(self.engine.rows) + 1)
        self._fail(row.job, ResourceExhausted("the LLM ran out of memory with this request in its batch; retry later"))
        release_memory()

    def _guarded(self, work: Callable[[], None], joining: list[_Request] | None = None) -> None:
        """Run ``work``. Out of memory while admitting fails the joining requests (the batch is as it
        was); any other failure fails every row and drops the batch. Memory is released after either."""
        error: BaseException | None = None
        try:
            work()
        except torch.OutOfMemoryError:
            error = ResourceExhausted("the LLM ran out of memory starting this request; retry later")
        except Exception as exc:
            log.exception("llm: the decode loop failed; dropping the batch")
            error = exc
        if error is None:
            return
        if not (joining is not None and isinstance(error, ResourceExhausted)):
            for row in self.engine.clear():
                self._fail(row.job, error)
        for request in joining or []:
            self._fail(request.job, error)
        release_memory()

    def _finish(self, job: Job, result: Completion) -> None:
        self._conclude(job, result)

    def _fail(self, job: Job, error: BaseException) -> None:
        self._conclude(job, error)

    def _conclude(self, job: Job, outcome: Completion | BaseException) -> None:
        """A running request's outcome goes through the engine's outbox, after the deltas it made (the
        iteration's flush hands them over together)."""
        request = self._running.pop(job, None)
        if request is not None:
            self.engine.outbox.post(request.loop, _settle, request.future, outcome)

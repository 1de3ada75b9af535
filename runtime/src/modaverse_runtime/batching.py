"""Dynamic micro-batching: one worker that runs queued requests as shared model calls.

Callers ``await batcher.submit(item)`` (or ``enqueue`` it and read its progress, below). A
worker task takes the oldest waiting item plus every waiting item with the same batch key
(up to ``max_items``) and runs ``run_batch(batch)`` once, off the event loop, handing each
caller its own result. Items with another key keep their order for a later call. While the
model is busy, new items queue up and form the next batch, so batches grow with load on
their own. Beyond ``max_queue`` waiting items, new ones are refused at once
(ResourceExhausted) rather than letting latency grow without bound.

Waiting for company is adaptive by default: callers that will submit soon (their input is
still being decoded) announce themselves with :meth:`MicroBatcher.expecting`; the worker
waits up to ``max_wait_ms`` only while such announced items exist, so a lone request never
waits. ``wait_unannounced=True`` always waits up to ``max_wait_ms`` (long generations, where
a few milliseconds buy a fuller batch).

A caller that goes away (cancelled, deadline) leaves the queue at once and frees its place.
Long calls can see that from the model thread (:attr:`Batch.abandoned`, :meth:`Batch.gone` per row)
and stop early, and stream progress events to each caller (:meth:`Batch.report`, read by
``async for event in job``).

A batch that runs out of GPU memory (``torch.OutOfMemoryError``) fails its callers with
ResourceExhausted; the failed call's memory is given back (:func:`~.devices.release_memory`) before
the worker takes the next batch, so the server goes on serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Executor
from typing import Any, Generic, TypeVar, overload

from . import metrics
from .devices import release_memory
from .errors import ResourceExhausted, Unavailable, is_out_of_memory

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)

_END = object()  # after the last progress event of a job


class Job(Generic[T, R]):
    """One queued item. Its caller reads progress events with ``async for event in job``, then
    ``await job.result()``, and calls :meth:`cancel` when it leaves (done, cancelled or failed)."""

    def __init__(self, batcher: MicroBatcher[T, R], item: T, key: Hashable) -> None:
        self.item = item
        self.key = key
        self.enqueued = time.perf_counter()
        self.started = 0.0  # when its batch started running
        # Set on the loop, read by the model thread: a plain bool is safe to share.
        self.gone = False
        self._batcher = batcher
        self._loop = asyncio.get_running_loop()
        self._future: asyncio.Future[R] = self._loop.create_future()
        self._future.add_done_callback(self._on_done)
        self._events: asyncio.Queue[object] = asyncio.Queue()

    def __aiter__(self) -> Job[T, R]:
        return self

    async def __anext__(self) -> object:
        event = await self._events.get()
        if event is _END:
            self._events.put_nowait(_END)  # iterating again ends at once
            raise StopAsyncIteration
        return event

    async def result(self) -> R:
        return await self._future  # cancelling the caller cancels the job (see _on_done)

    def cancel(self) -> bool:
        """The caller is gone: leave the queue (True if it was still waiting), or let a running call stop early."""
        self.gone = True
        if not self._future.done():
            self._future.cancel()
        return self._batcher._discard(self)

    def report(self, event: object) -> None:
        """A progress event for this caller, from any thread."""
        if not self.gone:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)

    def _on_done(self, future: asyncio.Future[R]) -> None:
        if future.cancelled():
            self.gone = True
            self._batcher._discard(self)

    # On the loop, after every progress event of the call (those were scheduled before the call returned).
    def _succeed(self, result: R) -> None:
        if not self._future.done():
            self._future.set_result(result)
        self._events.put_nowait(_END)

    def _fail(self, error: BaseException) -> None:
        if not self._future.done():
            self._future.set_exception(error)
        self._events.put_nowait(_END)


class Batch(Sequence[T]):
    """The items of one model call as ``run_batch`` sees them: a plain sequence, plus what a long
    call needs on the model thread (whether anyone still waits; progress for the callers)."""

    def __init__(self, jobs: Sequence[Job[T, Any]], closing: Callable[[], bool]) -> None:
        self._jobs = jobs
        self._closing = closing

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[T]: ...
    def __getitem__(self, index: int | slice) -> T | Sequence[T]:
        if isinstance(index, slice):
            return [job.item for job in self._jobs[index]]
        return self._jobs[index].item

    def __len__(self) -> int:
        return len(self._jobs)

    def gone(self, index: int) -> bool:
        return self._closing() or self._jobs[index].gone

    @property
    def abandoned(self) -> bool:
        """Nobody waits for this call any more (every caller left, or the worker is shutting down)."""
        return self._closing() or all(job.gone for job in self._jobs)

    def report(self, event: object, index: int | None = None) -> None:
        """From the model thread: ``event`` to the caller of row ``index`` (None: every row's caller)."""
        for job in self._jobs if index is None else (self._jobs[index],):
            job.report(event)


class _Ticket(Generic[T, R]):
    def __init__(self, batcher: MicroBatcher[T, R]) -> None:
        self._batcher = batcher
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            self._batcher._expected -= 1
            self._batcher._wake.set()

    async def submit(self, item: T) -> R:
        self.close()
        return await self._batcher.submit(item)


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        name: str,
        run_batch: Callable[[Batch[T]], Sequence[R]],
        *,
        executor: Executor,
        max_items: int = 8,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        key: Callable[[T], Hashable] | None = None,
        wait_unannounced: bool = False,
        oom_hint: str = "retry later",
    ) -> None:
        """``key``: items with equal keys may share a call (None: all may). ``run_batch`` runs on
        ``executor`` and returns one result per item, in order. ``oom_hint`` ends the message callers
        get when a batch runs out of GPU memory (what they can change)."""
        if max_items < 1 or max_queue < 1:
            raise ValueError("max_items and max_queue must be >= 1")
        self.name = name
        self._run_batch = run_batch
        self._executor = executor
        self.max_items = max_items
        self.max_wait_s = max(max_wait_ms, 0.0) / 1000.0
        self.max_queue = max_queue
        self._key = key
        self._wait_unannounced = wait_unannounced
        self._oom_hint = oom_hint
        self._waiting: list[Job[T, R]] = []
        self._running: list[Job[T, R]] = []
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._expected = 0  # announced items not yet submitted
        self._wake = asyncio.Event()  # an item arrived or an announcement was withdrawn

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @contextlib.contextmanager
    def expecting(self) -> Iterator[_Ticket[T, R]]:
        """Announce an item that is on its way; submit it through the ticket."""
        ticket = _Ticket(self)
        self._expected += 1
        try:
            yield ticket
        finally:
            ticket.close()

    def enqueue(self, item: T) -> Job[T, R]:
        """Queue ``item`` (on the event loop); raises at once when shut down or full."""
        if self._closed:
            raise Unavailable(f"{self.name} is shutting down")
        if len(self._waiting) >= self.max_queue:
            raise ResourceExhausted(f"{self.name} queue is full ({self.max_queue} requests waiting); retry later")
        job = Job(self, item, None if self._key is None else self._key(item))
        self._waiting.append(job)
        self._wake.set()
        self._gauge()
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"batcher-{self.name}")
        return job

    async def submit(self, item: T) -> R:
        job = self.enqueue(item)
        try:
            return await job.result()
        finally:
            job.cancel()

    def _gauge(self) -> None:
        metrics.QUEUE_DEPTH.labels(self.name).set(len(self._waiting))

    def _discard(self, job: Job[T, R]) -> bool:
        try:
            self._waiting.remove(job)
        except ValueError:
            return False
        self._gauge()
        return True

    def _take_compatible(self, batch: list[Job[T, R]], key: Hashable) -> None:
        for job in list(self._waiting):
            if len(batch) >= self.max_items:
                return
            if job.key == key:
                self._waiting.remove(job)
                batch.append(job)

    async def _next_batch(self) -> list[Job[T, R]]:
        """The oldest item and up to ``max_items - 1`` compatible ones, waiting at most ``max_wait_ms`` for them."""
        while not self._waiting:
            self._wake.clear()
            await self._wake.wait()
        first = self._waiting.pop(0)
        batch = [first]
        deadline = time.perf_counter() + self.max_wait_s
        while True:
            self._take_compatible(batch, first.key)
            if len(batch) >= self.max_items:
                break
            if not self._wait_unannounced and self._expected == 0:
                break  # nobody else is on the way: do not make this batch wait
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)
        self._gauge()
        return batch

    async def _work(self) -> None:
        while True:
            live = [job for job in await self._next_batch() if not job.gone]
            if live:
                await self._run(live)

    async def _run(self, jobs: list[Job[T, R]]) -> None:
        started = time.perf_counter()
        for job in jobs:
            job.started = started
        metrics.BATCH_SIZE.labels(self.name).observe(len(jobs))
        self._running = jobs
        batch = Batch(jobs, lambda: self._closed)
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self._call_model, batch)
            if len(results) != len(jobs):
                raise RuntimeError(f"{self.name}: batch returned {len(results)} results for {len(jobs)}")
        except Exception as exc:  # every caller of the batch gets it; the worker goes on with the next one
            for job in jobs:
                job._fail(exc)
            return
        finally:
            self._running = []
        for job, result in zip(jobs, results, strict=True):
            job._succeed(result)

    def _call_model(self, batch: Batch[T]) -> Sequence[R]:
        """On the model thread: ``run_batch``, with an out-of-memory failure turned into ResourceExhausted."""
        try:
            return self._run_batch(batch)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
        # Out of the except block: the error and its traceback (the failed call's frames and tensors) are gone.
        release_memory()
        log.warning("%s: out of GPU memory on a batch of %d; memory released", self.name, len(batch))
        raise ResourceExhausted(f"{self.name}: out of GPU memory on a batch of {len(batch)}; {self._oom_hint}")

    async def close(self) -> None:
        """Refuse new items; waiting and running callers get Unavailable (a running call sees
        :attr:`Batch.abandoned` and may stop at its next step)."""
        self._closed = True
        left, self._waiting = [*self._running, *self._waiting], []
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for job in left:
            job._fail(Unavailable(f"{self.name} shut down"))
        self._gauge()

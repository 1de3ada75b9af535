"""Dynamic micro-batching: concurrent requests share one model call.

Callers ``await batcher.submit(item)``. A worker task takes the first waiting item and
runs ``run_batch(items)`` once, off the event loop, for everything it gathered, handing
each caller its own result. While the model is busy, new items queue up and form the
next batch (up to ``max_items``), so batches grow with load on their own.

Waiting for stragglers is adaptive: callers that will submit soon (their input is still
being decoded) announce themselves with :meth:`MicroBatcher.expecting`; the worker waits
up to ``max_wait_ms`` only while such announced items exist. A lone request therefore
never waits, and a burst of concurrent requests still lands in one batch.

Items whose caller has gone (cancelled, deadline) are dropped before the model runs, so
a cancelled request frees its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from . import metrics
from .errors import ResourceExhausted, Unavailable

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    enqueued: float = field(default_factory=time.perf_counter)


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
        run_batch: Callable[[Sequence[T]], Sequence[R]],
        *,
        executor: Executor,
        max_items: int = 8,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
    ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        self.name = name
        self._run_batch = run_batch
        self._executor = executor
        self.max_items = max_items
        self.max_wait_s = max(max_wait_ms, 0.0) / 1000.0
        self.max_queue = max_queue
        self._queue: asyncio.Queue[_Pending[T, R]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._expected = 0  # announced items not yet submitted
        self._wake = asyncio.Event()  # an item arrived or an announcement was withdrawn

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @contextlib.contextmanager
    def expecting(self) -> Iterator[_Ticket[T, R]]:
        """Announce an item that is on its way; submit it through the ticket."""
        ticket = _Ticket(self)
        self._expected += 1
        try:
            yield ticket
        finally:
            ticket.close()

    async def submit(self, item: T) -> R:
        if self._closed:
            raise Unavailable(f"{self.name} is shutting down")
        if self._queue.qsize() >= self.max_queue:
            raise ResourceExhausted(f"{self.name} queue is full ({self.max_queue} items waiting); retry later")
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"batcher-{self.name}")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(item, future))
        self._wake.set()
        metrics.QUEUE_DEPTH.labels(self.name).set(self._queue.qsize())
        return await future

    async def _collect(self) -> list[_Pending[T, R]]:
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_items:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            if self._expected == 0:
                break  # nobody else is on the way: do not make this batch wait
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                break
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            metrics.QUEUE_DEPTH.labels(self.name).set(self._queue.qsize())
            live = [p for p in batch if not p.future.done()]
            if not live:
                continue
            metrics.BATCH_SIZE.labels(self.name).observe(len(live))
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, [p.item for p in live])
                if len(results) != len(live):
                    raise RuntimeError(f"{self.name}: batch returned {len(results)} results for {len(live)}")
            except Exception as exc:
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            for p, result in zip(live, results, strict=True):
                if not p.future.done():
                    p.future.set_result(result)

    async def close(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(Unavailable(f"{self.name} shut down"))

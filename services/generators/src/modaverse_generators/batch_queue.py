"""A bounded wait queue that hands out batches of compatible jobs.

Generations are long, so requests that arrive while the model is busy queue up; the
worker then takes the oldest job plus every waiting job with the same batch key (up to
``max_items``), so different prompts and seeds share one pipeline call while
incompatible requests (other sizes, step counts, ...) keep their order for a later
call. Beyond ``capacity`` waiting jobs, ``put`` raises ResourceExhausted at once rather
than letting latency grow without bound. Jobs that are cancelled while waiting are
removed immediately, so they free their place.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from modaverse_runtime.errors import ResourceExhausted, Unavailable

J = TypeVar("J")


class BatchQueue(Generic[J]):
    def __init__(
        self,
        name: str,
        key: Callable[[J], Hashable],
        *,
        capacity: int,
        max_items: int = 1,
        max_wait_ms: float = 0.0,
    ) -> None:
        if capacity < 1 or max_items < 1:
            raise ValueError("capacity and max_items must be >= 1")
        self.name = name
        self.capacity = capacity
        self.max_items = max_items
        self.max_wait_s = max(max_wait_ms, 0.0) / 1000.0
        self._key = key
        self._waiting: list[J] = []
        self._arrived = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._waiting)

    def put(self, job: J) -> None:
        if self._closed:
            raise Unavailable(f"{self.name} is shutting down")
        if len(self._waiting) >= self.capacity:
            raise ResourceExhausted(f"{self.name} queue is full ({self.capacity} requests waiting); retry later")
        self._waiting.append(job)
        self._arrived.set()

    def discard(self, job: J) -> bool:
        """Remove a waiting job (cancelled); False if it already left the queue."""
        try:
            self._waiting.remove(job)
        except ValueError:
            return False
        return True

    def close(self) -> list[J]:
        """Refuse new jobs; returns (and forgets) those still waiting."""
        self._closed = True
        left, self._waiting = self._waiting, []
        return left

    def _take_compatible(self, batch: list[J], key: Hashable) -> None:
        for job in list(self._waiting):
            if len(batch) >= self.max_items:
                return
            if self._key(job) == key:
                self._waiting.remove(job)
                batch.append(job)

    async def next_batch(self) -> list[J]:
        """The oldest job and up to ``max_items - 1`` compatible ones, waiting at most ``max_wait_ms`` for them."""
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
        first = self._waiting.pop(0)
        batch, key = [first], self._key(first)
        deadline = time.perf_counter() + self.max_wait_s
        while True:
            self._take_compatible(batch, key)
            remaining = deadline - time.perf_counter()
            if len(batch) >= self.max_items or remaining <= 0:
                return batch
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                self._take_compatible(batch, key)
                return batch

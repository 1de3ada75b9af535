"""Client-side load balancing and failover over a route's replicas.

Calls rotate round-robin over the replicas; a replica that answered UNAVAILABLE is skipped for a
cool-down, and the call is retried on the next one with exponential backoff. Streams fail over
only before their first message: once output has reached the client it cannot be replayed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from grpc import aio

from .discovery import ChannelConfig, open_channel

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})


@dataclass
class Replica:
    target: str
    config: ChannelConfig = field(default_factory=ChannelConfig)
    failed_at: float = -1e9
    _channel: aio.Channel | None = field(default=None, repr=False)

    @property
    def channel(self) -> aio.Channel:
        if self._channel is None:
            self._channel = open_channel(self.target, self.config)
        return self._channel

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


class ReplicaSet:
    def __init__(
        self,
        name: str,
        targets: list[str],
        *,
        attempts: int = 3,
        backoff_s: float = 0.1,
        cooldown_s: float = 5.0,
        channel_config: ChannelConfig | None = None,
        wake_s: float = 0.0,
    ) -> None:
        self.name = name
        self.wake_s = wake_s
        config = channel_config or ChannelConfig()
        self.replicas = [Replica(t, config) for t in targets]
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.cooldown_s = cooldown_s
        self._next = itertools.count()

    def order(self) -> list[Replica]:
        """Round-robin order for one call; replicas cooling down after a failure go last."""
        n = len(self.replicas)
        start = next(self._next) % n
        rotated = self.replicas[start:] + self.replicas[:start]
        now = time.monotonic()
        fresh = [r for r in rotated if now - r.failed_at >= self.cooldown_s]
        return fresh + [r for r in rotated if r not in fresh]

    def _plan(self) -> Iterator[Replica]:
        """Replicas to try, in order: ``attempts`` of them, and then, when ``wake_s`` is set (a route
        that may be scaled to zero), keep trying until ``wake_s`` has passed since the first try."""
        order = self.order()
        give_up = time.monotonic() + self.wake_s
        attempt = 0
        while attempt < self.attempts or time.monotonic() < give_up:
            yield order[attempt % len(order)]
            attempt += 1

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_s * 2.0 ** (attempt - 1), 2.0)

    async def call(self, fn: Callable[[Replica], Awaitable[T]]) -> T:
        """A unary call with failover: the stream of its one reply, so both kinds share one retry loop."""

        async def reply(replica: Replica) -> AsyncIterator[T]:
            yield await fn(replica)

        # Drained, not left after the first item: both generators finish here, none waits for the GC to close it.
        (result,) = [item async for item in self.stream(reply)]
        return result

    async def stream(self, open_stream: Callable[[Replica], AsyncIterable[T]]) -> AsyncGenerator[T, None]:
        """The one retry loop: each replica of the plan in turn, after a backoff, until one answers. A retryable
        status before the first item marks that replica failed and moves on; once an item has been yielded the
        error is the caller's (output that reached the client cannot be replayed). Any other status, such as
        DEADLINE_EXCEEDED, ends the call at once; the last retryable error is raised when the plan runs out."""
        last: aio.AioRpcError | None = None
        for attempt, replica in enumerate(self._plan()):
            if attempt:
                await asyncio.sleep(self._backoff(attempt))
            started = False
            try:
                async for item in open_stream(replica):
                    started = True
                    yield item
                return
            except aio.AioRpcError as error:
                if started or error.code() not in RETRYABLE:
                    raise
                self._mark_failed(replica, error)
                last = error
        assert last is not None
        raise last

    def _mark_failed(self, replica: Replica, error: aio.AioRpcError) -> None:
        """Start the replica's cool-down (``order`` puts it last until ``cooldown_s`` has passed)."""
        replica.failed_at = time.monotonic()
        log.warning("%s replica %s unavailable (%s); trying another", self.name, replica.target, error.details())

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.close()

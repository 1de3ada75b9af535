"""Client-side load balancing and failover over a route's replicas.

Calls rotate round-robin over the replicas; a replica that answered UNAVAILABLE is skipped for a
cool-down, and the call is retried on the next one with exponential backoff. A replica that answered
RESOURCE_EXHAUSTED (its queue is full, or it ran out of GPU memory) is up but busy: the call goes at
once to a replica of the route it has not tried yet, without a cool-down or a backoff and without using
up one of its attempts. Once every replica has answered it, the call waits for capacity instead of failing
(backpressure, not loss): it pauses with jittered exponential backoff and tries the replicas again, until
one has room or ``busy_wait_s``, or half of the call's time left, has passed; only then does the caller get
RESOURCE_EXHAUSTED. Streams fail over only before their first message: once output has reached the client
it cannot be replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from time import monotonic
from typing import TypeVar

import grpc
from grpc import aio

from . import metrics
from .discovery import ChannelConfig, open_channel

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})
BUSY = grpc.StatusCode.RESOURCE_EXHAUSTED


class BusyWait:
    """One call's wait for capacity once every replica answered RESOURCE_EXHAUSTED: pauses of ``first_s``
    doubling to ``max_s``, each drawn from its upper half (callers refused together do not come back
    together), until ``cap_s`` has passed since the wait began or half of the call's time left then has,
    whichever is sooner. The other half is the call's own: capacity that appears too late for the call to
    run would only turn RESOURCE_EXHAUSTED into DEADLINE_EXCEEDED."""

    def __init__(self, service: str, cap_s: float, deadline: float | None, first_s: float, max_s: float) -> None:
        self.service = service
        self.cap_s = cap_s
        self.deadline = deadline  # a monotonic() instant
        self.first_s = first_s
        self.max_s = max_s
        self.began: float | None = None
        self.until = 0.0
        self.pauses = 0

    async def pause(self) -> bool:
        """Sleep before the next round of tries; False (no sleep) once the wait is used up."""
        now = monotonic()
        if self.began is None:
            self.began = now
            budget = self.cap_s if self.deadline is None else min(self.cap_s, (self.deadline - now) / 2)
            self.until = now + budget
            log.info("%s: every replica busy; waiting up to %.1f s for capacity", self.service, max(budget, 0.0))
        left = self.until - now
        if left <= 0:
            return False
        delay = min(self.first_s * 2.0**self.pauses, self.max_s) * random.uniform(0.5, 1.0)
        self.pauses += 1
        metrics.BUSY_WAITS.labels(self.service).inc()
        await asyncio.sleep(min(delay, left))  # a cancelled call stops here at once
        return True

    def gave_up(self, last: aio.AioRpcError) -> aio.AioRpcError:
        """The error the caller gets: the last RESOURCE_EXHAUSTED, saying how long the service was busy."""
        if self.began is None or self.pauses == 0:
            return last
        details = f"every replica was busy for {monotonic() - self.began:.1f} s; last answer: {last.details()}"
        return aio.AioRpcError(BUSY, last.initial_metadata(), last.trailing_metadata(), details=details)


@dataclass
class Replica:
    target: str
    config: ChannelConfig = field(default_factory=ChannelConfig)
    failed_at: float = -1e9
    # The name the channel presents (HTTP/2 :authority, TLS server name) when ``target`` is an address: a
    # pod dialled under its Service's DNS name (kube_discovery.py). Empty: the target's own.
    authority: str = ""
    _channel: aio.Channel | None = field(default=None, repr=False)

    @property
    def channel(self) -> aio.Channel:
        """The replica's channel, opened on first use (again after ``detach_channel``)."""
        if self._channel is None:
            self._channel = open_channel(self.target, self.config, self.authority)
        return self._channel

    @property
    def has_channel(self) -> bool:
        return self._channel is not None

    def detach_channel(self) -> aio.Channel | None:
        """Hand over the open channel (to be closed by the caller, e.g. once its calls drain) and forget it."""
        channel, self._channel = self._channel, None
        return channel

    async def close(self) -> None:
        channel = self.detach_channel()
        if channel is not None:
            await channel.close()


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
        busy_wait_s: float = 0.0,
        busy_backoff_s: tuple[float, float] = (0.05, 1.0),
    ) -> None:
        self.name = name
        self.wake_s = wake_s
        self.busy_wait_s = busy_wait_s
        self.busy_backoff_s = busy_backoff_s  # first and longest pause of a busy wait
        config = channel_config or ChannelConfig()
        self.replicas = [Replica(t, config) for t in targets]
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.cooldown_s = cooldown_s
        self._next = itertools.count()
        self.in_flight = 0  # calls running on this set; one the routing table dropped is closed once it is 0

    def order(self) -> list[Replica]:
        """Round-robin order for one call; replicas cooling down after a failure go last."""
        n = len(self.replicas)
        start = next(self._next) % n
        rotated = self.replicas[start:] + self.replicas[:start]
        now = monotonic()
        fresh = [r for r in rotated if now - r.failed_at >= self.cooldown_s]
        return fresh + [r for r in rotated if r not in fresh]

    def _plan(self, busy: set[str]) -> Iterator[Replica]:
        """Replicas to try, in order: ``attempts`` of them, and then, when ``wake_s`` is set (a route
        that may be scaled to zero), keep trying until ``wake_s`` has passed since the first try. The
        caller adds to ``busy`` the replicas that answered RESOURCE_EXHAUSTED: they are not tried again,
        their tries do not count as attempts, and the plan ends when every replica is busy."""
        order = self.order()
        targets = {r.target for r in order}
        give_up = monotonic() + self.wake_s
        attempts = position = 0
        while attempts < self.attempts or monotonic() < give_up:
            if targets <= busy:
                return
            replica = order[position % len(order)]
            position += 1
            if replica.target in busy:
                continue
            yield replica
            attempts += replica.target not in busy  # the caller has recorded how this try ended

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_s * 2.0 ** (attempt - 1), 2.0)

    async def call(self, fn: Callable[[Replica], Awaitable[T]], *, deadline: float | None = None) -> T:
        """A unary call with failover: the stream of its one reply, so both kinds share one retry loop."""

        async def reply(replica: Replica) -> AsyncIterator[T]:
            yield await fn(replica)

        # Drained, not left after the first item: both generators finish here, none waits for the GC to close it.
        (result,) = [item async for item in self.stream(reply, deadline=deadline)]
        return result

    async def stream(
        self, open_stream: Callable[[Replica], AsyncIterable[T]], *, deadline: float | None = None
    ) -> AsyncGenerator[T, None]:
        """A call (see ``_attempts``), counted in ``in_flight`` while it runs. ``deadline`` (a ``monotonic()``
        instant) bounds a wait for a busy service; each try should ask for the time left then as its timeout."""
        self.in_flight += 1
        try:
            async with contextlib.aclosing(self._attempts(open_stream, deadline)) as items:
                async for item in items:
                    yield item
        finally:
            self.in_flight -= 1

    async def _attempts(
        self, open_stream: Callable[[Replica], AsyncIterable[T]], deadline: float | None
    ) -> AsyncGenerator[T, None]:
        """The one retry loop: each replica of the plan in turn until one answers. A retryable status before
        the first item marks that replica failed and moves on after a backoff; RESOURCE_EXHAUSTED moves on at
        once to a replica not tried yet, and when the plan ends on it (every replica busy) the call waits
        (``BusyWait``) and plans again. Once an item has been yielded the error is the caller's (output that
        reached the client cannot be replayed). Any other status, such as DEADLINE_EXCEEDED, ends the call at
        once; the last error is raised when the plan runs out."""
        last: aio.AioRpcError | None = None
        failures = 0
        first_s, max_s = self.busy_backoff_s
        wait = BusyWait(self.name, self.busy_wait_s, deadline, first_s, max_s)
        while True:
            busy: set[str] = set()
            for replica in self._plan(busy):
                if last is not None and last.code() != BUSY:
                    await asyncio.sleep(self._backoff(failures))
                started = False
                try:
                    async for item in open_stream(replica):
                        started = True
                        yield item
                    return
                except aio.AioRpcError as error:
                    code = error.code()
                    if started or (code not in RETRYABLE and code != BUSY):
                        raise
                    if code == BUSY:  # up but full: no cool-down
                        busy.add(replica.target)
                        log.info("%s replica %s busy (%s); trying another", self.name, replica.target, error.details())
                    else:
                        failures += 1
                        self._mark_failed(replica, error)
                    last = error
            assert last is not None
            if last.code() != BUSY:
                raise last
            if not await wait.pause():
                raise wait.gave_up(last)

    def _mark_failed(self, replica: Replica, error: aio.AioRpcError) -> None:
        """Start the replica's cool-down (``order`` puts it last until ``cooldown_s`` has passed)."""
        replica.failed_at = monotonic()
        log.warning("%s replica %s unavailable (%s); trying another", self.name, replica.target, error.details())

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.close()

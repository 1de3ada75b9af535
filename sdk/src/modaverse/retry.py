"""What the clients retry on their own: a call refused before it produced anything.

Two statuses say that nothing ran that would run twice: RESOURCE_EXHAUSTED (the gateway shed the call at
admission, or a backend stayed full) and UNAVAILABLE (the gateway or a backend behind it was down, loading
or draining). They are retried only before the first event of a stream has arrived: after it, output has
reached the caller and a second run would repeat it (and could differ). Every other status is the
caller's at once: a bad request stays bad, a passed deadline stays passed.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import grpc

RETRYABLE = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE})


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` tries in all (1: no retry); the pause before retry n is ``initial_backoff_s`` × 2^(n-1),
    at most ``max_backoff_s``, less a random part of up to ``jitter`` of it (so clients refused together
    do not come back together)."""

    max_attempts: int = 3
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 (1: no retry), not {self.max_attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("backoffs must satisfy 0 <= initial_backoff_s <= max_backoff_s")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, not {self.jitter}")

    def backoff(self, retry: int) -> float:
        """The pause before retry number ``retry`` (1 for the first)."""
        full = min(self.initial_backoff_s * 2.0 ** (retry - 1), self.max_backoff_s)
        return full * (1 - self.jitter * random.random())


NO_RETRY = RetryPolicy(max_attempts=1)


class Attempts:
    """One call's tries under a policy and the call's timeout: the timeout of each try (what is left) and
    whether, and after how long a pause, a failed try is tried again."""

    def __init__(self, policy: RetryPolicy, timeout: float | None) -> None:
        self.policy = policy
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.made = 0

    def timeout(self) -> float | None:
        """The timeout of the next try: the call's time left."""
        self.made += 1
        return None if self.deadline is None else max(self.deadline - time.monotonic(), 0.0)

    def pause(self, code: grpc.StatusCode | None, started: bool) -> float | None:
        """How long to wait before trying again after a try failed with ``code``, or None: the error is the
        caller's (``started``: the call had already produced an event)."""
        if started or code not in RETRYABLE or self.made >= self.policy.max_attempts:
            return None
        delay = self.policy.backoff(self.made)
        if self.deadline is not None and time.monotonic() + delay >= self.deadline:
            return None  # no time left for another try
        return delay

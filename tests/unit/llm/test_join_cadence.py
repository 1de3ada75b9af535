"""When waiting requests join a running batch under the continuous policy (scheduler.py): together, since
each join is a prefill of its own, but never later than ``join_wait_ms`` and at once into a small batch."""

from __future__ import annotations

import time
from collections import deque
from types import SimpleNamespace

import pytest

from modaverse_llm.scheduler import Scheduler


def scheduler(running: int, waiting_since: list[float], join_wait_ms: float = 20.0, max_rows: int = 32) -> Scheduler:
    """A Scheduler's admission state without its model thread."""
    s = object.__new__(Scheduler)
    s.engine = SimpleNamespace(rows=[object()] * running, max_rows=max_rows)  # type: ignore[assignment]
    s._waiting = deque(SimpleNamespace(since=t) for t in waiting_since)  # type: ignore[misc]
    s.join_wait_s = join_wait_ms / 1000
    return s


def test_a_small_batch_takes_a_newcomer_at_once() -> None:
    now = time.monotonic()
    assert scheduler(running=1, waiting_since=[now])._join_due()
    assert scheduler(running=3, waiting_since=[now])._join_due()


def test_a_busy_batch_waits_for_company_or_the_join_wait() -> None:
    now = time.monotonic()

    def due(waiting_since: list[float]) -> bool:
        return scheduler(running=28, waiting_since=waiting_since, max_rows=64)._join_due()

    assert not due([now])
    assert not due([now] * 6)
    assert due([now] * 7)  # a quarter of the running rows
    assert due([now - 0.05])  # the oldest waited 50 ms > 20 ms


def test_requests_that_fill_the_free_rows_join_at_once() -> None:
    now = time.monotonic()
    assert scheduler(running=30, waiting_since=[now] * 2, max_rows=32)._join_due()


@pytest.mark.parametrize("running", [0, 5, 31])
def test_nothing_waiting_is_never_due(running: int) -> None:
    assert not scheduler(running=running, waiting_since=[])._join_due()

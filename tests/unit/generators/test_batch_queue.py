"""BatchQueue on its own: capacity, compatible grouping, order, waiting for company, discard, close."""

from __future__ import annotations

import asyncio

import pytest

from modaverse_generators.batch_queue import BatchQueue
from modaverse_runtime.errors import ResourceExhausted, Unavailable


def queue(**kw: object) -> BatchQueue[tuple[str, int]]:
    return BatchQueue("test", lambda job: job[0], **{"capacity": 8, "max_items": 3, **kw})  # type: ignore[arg-type]


async def test_full_queue_refuses_at_once() -> None:
    q = queue(capacity=2)
    q.put(("a", 1))
    q.put(("a", 2))
    with pytest.raises(ResourceExhausted, match=r"queue is full \(2 requests waiting\)"):
        q.put(("a", 3))
    assert q.discard(("a", 1)) and not q.discard(("a", 1))
    q.put(("a", 3))  # the discarded job's place is free again
    assert len(q) == 2


async def test_batches_take_compatible_jobs_in_order_up_to_max_items() -> None:
    q = queue()
    for job in [("a", 1), ("b", 2), ("a", 3), ("a", 4), ("a", 5), ("b", 6)]:
        q.put(job)
    assert await q.next_batch() == [("a", 1), ("a", 3), ("a", 4)]
    assert await q.next_batch() == [("b", 2), ("b", 6)]
    assert await q.next_batch() == [("a", 5)]
    assert len(q) == 0


async def test_waits_for_company_only_up_to_max_wait() -> None:
    q = queue(max_wait_ms=200)
    q.put(("a", 1))

    async def late() -> None:
        await asyncio.sleep(0.05)
        q.put(("b", 2))  # incompatible: does not join
        q.put(("a", 3))

    loop = asyncio.get_running_loop()
    start = loop.time()
    task = asyncio.ensure_future(late())
    batch = await q.next_batch()
    await task
    assert batch == [("a", 1), ("a", 3)]
    assert loop.time() - start >= 0.19  # still waited for a third
    start = loop.time()
    assert await q.next_batch() == [("b", 2)]
    assert loop.time() - start < 0.3


async def test_full_batch_does_not_wait() -> None:
    q = queue(max_wait_ms=5000)
    for i in range(3):
        q.put(("a", i))
    assert len(await asyncio.wait_for(q.next_batch(), 1)) == 3


async def test_next_batch_sleeps_until_a_job_arrives() -> None:
    q = queue()
    waiter = asyncio.ensure_future(q.next_batch())
    await asyncio.sleep(0.02)
    assert not waiter.done()
    q.put(("a", 1))
    assert await asyncio.wait_for(waiter, 1) == [("a", 1)]


async def test_close_returns_waiters_and_refuses_new_jobs() -> None:
    q = queue()
    q.put(("a", 1))
    assert q.close() == [("a", 1)]
    with pytest.raises(Unavailable):
        q.put(("a", 2))


def test_rejects_nonsense_sizes() -> None:
    with pytest.raises(ValueError, match="capacity"):
        queue(capacity=0)

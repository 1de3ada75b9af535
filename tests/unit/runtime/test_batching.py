from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from modaverse_runtime.batching import MicroBatcher
from modaverse_runtime.errors import ResourceExhausted, Unavailable


class Recorder:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = gate

    def __call__(self, items: Sequence[int]) -> list[int]:
        if self.gate is not None:
            self.gate.wait(5)
        self.batches.append(list(items))
        return [i * 10 for i in items]


@pytest.fixture
def pool():
    with ThreadPoolExecutor(1) as executor:
        yield executor


async def test_concurrent_items_share_a_batch_and_keep_their_results(pool) -> None:
    rec = Recorder()
    batcher = MicroBatcher("t", rec, executor=pool, max_items=8, max_wait_ms=50)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(8)))
    assert results == [i * 10 for i in range(8)]
    assert rec.batches == [list(range(8))]
    await batcher.close()


async def test_max_items_splits_batches(pool) -> None:
    rec = Recorder()
    batcher = MicroBatcher("t", rec, executor=pool, max_items=3, max_wait_ms=50)
    await asyncio.gather(*(batcher.submit(i) for i in range(7)))
    assert [len(b) for b in rec.batches] == [3, 3, 1]
    await batcher.close()


async def test_max_items_one_disables_batching(pool) -> None:
    rec = Recorder()
    batcher = MicroBatcher("t", rec, executor=pool, max_items=1, max_wait_ms=50)
    await asyncio.gather(*(batcher.submit(i) for i in range(4)))
    assert all(len(b) == 1 for b in rec.batches)
    await batcher.close()


async def test_batch_failure_reaches_every_caller(pool) -> None:
    def boom(items: Sequence[int]) -> list[int]:
        raise ValueError("model exploded")

    batcher = MicroBatcher("t", boom, executor=pool, max_items=4, max_wait_ms=20)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)
    # ...and the worker survives for the next batch
    batcher._run_batch = Recorder()
    assert await batcher.submit(2) == 20
    await batcher.close()


async def test_cancelled_callers_are_dropped_before_the_model_runs(pool) -> None:
    gate = threading.Event()
    rec = Recorder(gate)
    batcher = MicroBatcher("t", rec, executor=pool, max_items=1, max_wait_ms=0)
    first = asyncio.ensure_future(batcher.submit(1))  # occupies the model thread
    await asyncio.sleep(0.05)
    doomed = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0.01)
    doomed.cancel()
    gate.set()
    assert await first == 10
    assert await batcher.submit(3) == 30
    assert [b for b in rec.batches if 2 in b] == []
    await batcher.close()


async def test_full_queue_is_resource_exhausted(pool) -> None:
    gate = threading.Event()
    batcher = MicroBatcher("t", Recorder(gate), executor=pool, max_items=1, max_wait_ms=0, max_queue=2)
    running = [asyncio.ensure_future(batcher.submit(0))]
    await asyncio.sleep(0.05)  # the worker takes item 0 and blocks on the gate
    running += [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2)]
    await asyncio.sleep(0.01)
    with pytest.raises(ResourceExhausted, match="queue is full"):
        await batcher.submit(99)
    gate.set()
    assert await asyncio.gather(*running) == [0, 10, 20]
    await batcher.close()


async def test_close_fails_waiting_callers_with_unavailable(pool) -> None:
    gate = threading.Event()
    batcher = MicroBatcher("t", Recorder(gate), executor=pool, max_items=1, max_wait_ms=0)
    running = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0.05)
    waiting = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0.01)
    await batcher.close()
    gate.set()
    with pytest.raises(Unavailable):
        await waiting
    with pytest.raises(Unavailable):
        await batcher.submit(3)
    running.cancel()


async def test_lone_item_does_not_wait_for_stragglers(pool) -> None:
    rec = Recorder()
    batcher = MicroBatcher("t", rec, executor=pool, max_items=8, max_wait_ms=2000)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await batcher.submit(1) == 10
    assert loop.time() - start < 1.0  # far below max_wait: nobody else was announced
    await batcher.close()


async def test_announced_items_join_the_batch(pool) -> None:
    rec = Recorder()
    batcher = MicroBatcher("t", rec, executor=pool, max_items=8, max_wait_ms=2000)

    async def late(i: int, delay: float) -> int:
        with batcher.expecting() as ticket:
            await asyncio.sleep(delay)  # e.g. still decoding its input
            return await ticket.submit(i)

    results = await asyncio.gather(late(1, 0.0), late(2, 0.1), late(3, 0.2))
    assert list(results) == [10, 20, 30]
    assert rec.batches == [[1, 2, 3]]
    await batcher.close()


async def test_withdrawn_announcement_stops_the_wait(pool) -> None:
    rec = Recorder()
    batcher = MicroBatcher("t", rec, executor=pool, max_items=8, max_wait_ms=5000)
    loop = asyncio.get_running_loop()

    async def failing() -> None:
        with batcher.expecting():
            await asyncio.sleep(0.05)
            raise ValueError("bad input")

    start = loop.time()
    results = await asyncio.gather(batcher.submit(1), failing(), return_exceptions=True)
    assert results[0] == 10
    assert isinstance(results[1], ValueError)
    assert loop.time() - start < 4.0
    await batcher.close()

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from modaverse_runtime.batching import Batch, MicroBatcher
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


# --- batch keys, capacity, waiting for company, progress, cancellation (once the generators' BatchQueue) -----


class KeyedRecorder:
    """Records each call's items and when it started; returns the items themselves."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[tuple[str, int]]] = []
        self.started: list[float] = []
        self.gate = gate

    def __call__(self, items: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
        self.started.append(time.perf_counter())
        if self.gate is not None:
            self.gate.wait(5)
        self.batches.append(list(items))
        return list(items)


def keyed(run: Callable[[Batch[tuple[str, int]]], Sequence[tuple[str, int]]], pool: ThreadPoolExecutor, **kw: Any):
    options: dict[str, Any] = {"max_queue": 8, "max_items": 3, "wait_unannounced": True, "max_wait_ms": 0, **kw}
    return MicroBatcher("test", run, executor=pool, key=lambda item: item[0], **options)


async def test_full_queue_refuses_at_once_and_a_discarded_job_frees_its_place(pool) -> None:
    batcher = keyed(KeyedRecorder(), pool, max_queue=2)
    first = batcher.enqueue(("a", 1))  # the worker has not run yet: both wait
    batcher.enqueue(("a", 2))
    with pytest.raises(ResourceExhausted, match=r"queue is full \(2 requests waiting\)"):
        batcher.enqueue(("a", 3))
    assert first.cancel() and not first.cancel()
    batcher.enqueue(("a", 3))  # the discarded job's place is free again
    assert batcher.queued == 2
    await batcher.close()


async def test_batches_take_compatible_items_in_order_up_to_max_items(pool) -> None:
    rec = KeyedRecorder()
    batcher = keyed(rec, pool)
    jobs = [batcher.enqueue(item) for item in [("a", 1), ("b", 2), ("a", 3), ("a", 4), ("a", 5), ("b", 6)]]
    assert [await job.result() for job in jobs] == [("a", 1), ("b", 2), ("a", 3), ("a", 4), ("a", 5), ("b", 6)]
    assert rec.batches == [[("a", 1), ("a", 3), ("a", 4)], [("b", 2), ("b", 6)], [("a", 5)]]
    assert batcher.queued == 0
    await batcher.close()


async def test_waits_for_company_only_up_to_max_wait(pool) -> None:
    rec = KeyedRecorder()
    batcher = keyed(rec, pool, max_wait_ms=200)

    async def late() -> list[tuple[str, int]]:
        await asyncio.sleep(0.05)
        return [await job.result() for job in (batcher.enqueue(("b", 2)), batcher.enqueue(("a", 3)))]  # b does not join

    start = time.perf_counter()
    first = batcher.enqueue(("a", 1))
    task = asyncio.ensure_future(late())
    await first.result()
    await task
    assert rec.batches == [[("a", 1), ("a", 3)], [("b", 2)]]
    assert rec.started[0] - start >= 0.19  # still waited for a third
    assert rec.started[1] - rec.started[0] < 0.3
    await batcher.close()


async def test_a_full_batch_does_not_wait(pool) -> None:
    rec = KeyedRecorder()
    batcher = keyed(rec, pool, max_wait_ms=5000)
    jobs = [batcher.enqueue(("a", i)) for i in range(3)]
    await asyncio.wait_for(asyncio.gather(*(job.result() for job in jobs)), 1)
    assert [len(b) for b in rec.batches] == [3]
    await batcher.close()


async def test_the_worker_sleeps_until_an_item_arrives(pool) -> None:
    rec = KeyedRecorder()
    batcher = keyed(rec, pool)
    idle = batcher.enqueue(("a", 0))
    await idle.result()
    await asyncio.sleep(0.02)
    assert rec.batches == [[("a", 0)]]  # nothing ran without an item
    assert await asyncio.wait_for(batcher.submit(("a", 1)), 1) == ("a", 1)
    await batcher.close()


async def test_close_fails_waiting_items_and_refuses_new_ones(pool) -> None:
    rec = KeyedRecorder()
    batcher = keyed(rec, pool)
    waiting = batcher.enqueue(("a", 1))
    await batcher.close()
    with pytest.raises(Unavailable, match="test shut down"):
        await waiting.result()
    assert rec.batches == []
    with pytest.raises(Unavailable, match="shutting down"):
        batcher.enqueue(("a", 2))


def test_rejects_nonsense_sizes(pool) -> None:
    with pytest.raises(ValueError, match="max_queue"):
        keyed(KeyedRecorder(), pool, max_queue=0)
    with pytest.raises(ValueError, match="max_items"):
        keyed(KeyedRecorder(), pool, max_items=0)


async def test_progress_reaches_each_caller_before_its_result_and_a_gone_caller_stops_the_call(pool) -> None:
    seen_abandoned: list[bool] = []
    may_finish = threading.Event()

    def run(batch: Batch[tuple[str, int]]) -> list[tuple[str, int]]:
        batch.report("step 1")  # every row
        batch.report(f"row {len(batch) - 1}", index=len(batch) - 1)  # the last row only
        may_finish.wait(5)
        seen_abandoned.append(batch.abandoned)
        batch.report("step 2")
        return [(key, value * 10) for key, value in batch]

    batcher = keyed(run, pool)
    kept, dropped = batcher.enqueue(("a", 1)), batcher.enqueue(("a", 2))
    kept_events = []
    async for event in kept:
        kept_events.append(event)
        if event == "step 1":
            assert [await anext(dropped), await anext(dropped)] == ["step 1", "row 1"]  # its own, in order
            assert dropped.gone is False and not dropped.cancel()  # already running: not in the queue any more
            may_finish.set()
    assert kept_events == ["step 1", "step 2"]  # not "row 1": that was for the other row
    assert await kept.result() == ("a", 10)
    assert [event async for event in kept] == []  # iterating again ends at once
    assert [event async for event in dropped] == []  # nothing after it left ("step 2" went to kept only)
    assert seen_abandoned == [False]  # one caller still waited

    may_finish.clear()
    alone = batcher.enqueue(("a", 3))
    await asyncio.sleep(0.05)  # running, blocked on may_finish
    alone.cancel()
    may_finish.set()
    for _ in range(100):
        if seen_abandoned[1:]:
            break
        await asyncio.sleep(0.01)
    assert seen_abandoned == [False, True]  # the model thread sees that nobody waits any more
    await batcher.close()


async def test_close_fails_a_running_call_and_tells_the_model_thread(pool) -> None:
    gate = threading.Event()
    abandoned: list[bool] = []

    def run(batch: Batch[tuple[str, int]]) -> list[tuple[str, int]]:
        gate.wait(5)
        abandoned.append(batch.abandoned)
        return list(batch)

    batcher = keyed(run, pool)
    running = batcher.enqueue(("a", 1))
    await asyncio.sleep(0.05)
    await batcher.close()
    with pytest.raises(Unavailable, match="shut down"):
        await running.result()
    gate.set()
    await asyncio.get_running_loop().run_in_executor(pool, lambda: None)  # the call has returned
    assert abandoned == [True]


async def test_out_of_gpu_memory_is_resource_exhausted_the_memory_is_released_and_the_worker_goes_on(pool) -> None:
    torch = pytest.importorskip("torch")
    held: list[weakref.ref[Any]] = []

    def run(items: Sequence[int]) -> list[int]:
        if not held:
            activations = torch.zeros(1 << 20)  # what the failed call held, referenced by its traceback
            held.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (forced by a test)")
        return [i * 10 for i in items]

    batcher = MicroBatcher("t", run, executor=pool, max_items=4, max_wait_ms=50, oom_hint="try fewer frames")
    with pytest.raises(ResourceExhausted, match=r"t: out of GPU memory on a batch of 2; try fewer frames"):
        await asyncio.gather(batcher.submit(1), batcher.submit(2))
    assert held[0]() is None  # freed before the callers heard of it, not when they dropped the error
    assert await batcher.submit(3) == 30
    await batcher.close()

"""The vLLM backend's bounded queue (``VLLMBackend._slot``), without vLLM: at most ``max_batch``
requests inside vLLM, at most ``max_queue`` waiting, the next one refused (RESOURCE_EXHAUSTED); a
waiter that goes away and a request that fails give their places back. (With vLLM itself, through
gRPC: tests/integration/test_llm_vllm.py::test_requests_past_the_queue_limit_are_refused.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from modaverse_llm.vllm_backend import VLLMBackend, VLLMSettings
from modaverse_runtime.errors import ResourceExhausted


def backend(max_batch: int, max_queue: int, serialize: bool = False) -> VLLMBackend:
    # Not loaded: ``max_batch`` is what a CUDA build would run (CPU serialisation off) or 1 (on).
    settings = VLLMSettings(max_batch_size=max_batch, max_queue=max_queue, vllm_cpu_serialize=serialize)
    return VLLMBackend(settings)


def queue_depth() -> float:
    return REGISTRY.get_sample_value("modaverse_queue_depth", {"queue": "llm"}) or 0.0


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


class Holder:
    """Requests that take a slot and keep it until ``release`` is set."""

    def __init__(self, backend: VLLMBackend) -> None:
        self.backend = backend
        self.inside: list[str] = []
        self.release = asyncio.Event()

    async def hold(self, name: str) -> None:
        async with self.backend._slot():
            self.inside.append(name)
            await self.release.wait()

    def start(self, *names: str) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self.hold(n)) for n in names]


async def test_waiters_past_max_queue_are_refused_at_once() -> None:
    b = backend(max_batch=2, max_queue=2)
    assert b.max_batch == 2
    h = Holder(b)
    running = h.start("a", "b")
    await until(lambda: h.inside == ["a", "b"])
    waiting = h.start("c", "d")
    await until(lambda: b._waiting == 2)
    assert queue_depth() == 2
    with pytest.raises(ResourceExhausted, match=r"llm queue is full \(2 requests waiting\)"):
        async with b._slot():
            pytest.fail("a third waiter got in")
    assert b._waiting == 2 and h.inside == ["a", "b"]  # the refusal took no place
    h.release.set()
    await asyncio.gather(*running, *waiting)
    assert sorted(h.inside[2:]) == ["c", "d"]
    assert b._waiting == 0 and queue_depth() == 0
    # Every slot is free again: max_batch requests get in without waiting.
    h2 = Holder(b)
    again = h2.start("e", "f")
    await until(lambda: len(h2.inside) == 2)
    assert b._waiting == 0
    h2.release.set()
    await asyncio.gather(*again)


async def test_a_waiter_that_goes_away_frees_its_place() -> None:
    b = backend(max_batch=1, max_queue=1)
    h = Holder(b)
    (running,) = h.start("a")
    await until(lambda: h.inside == ["a"])
    (waiting,) = h.start("b")
    await until(lambda: b._waiting == 1)
    waiting.cancel()  # the caller cancelled or its deadline passed
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert b._waiting == 0 and queue_depth() == 0
    (next_one,) = h.start("c")  # the place is free: it queues instead of being refused
    await until(lambda: b._waiting == 1)
    h.release.set()
    await asyncio.gather(running, next_one)
    assert h.inside == ["a", "c"] and b._waiting == 0


async def test_a_failing_request_gives_its_slot_back() -> None:
    b = backend(max_batch=1, max_queue=1)
    with pytest.raises(RuntimeError, match="vLLM failed"):
        async with b._slot():
            raise RuntimeError("vLLM failed")
    h = Holder(b)
    h.release.set()
    await asyncio.wait_for(asyncio.gather(*h.start("a")), 5)
    assert h.inside == ["a"]


async def test_cpu_serialisation_runs_one_at_a_time() -> None:
    b = backend(max_batch=8, max_queue=4, serialize=True)  # not loaded: assumed CPU until load() finds CUDA
    assert b.max_batch == 1
    h = Holder(b)
    tasks = h.start("a", "b")
    await until(lambda: b._waiting == 1)
    assert h.inside == ["a"]
    h.release.set()
    await asyncio.gather(*tasks)
    assert h.inside == ["a", "b"]

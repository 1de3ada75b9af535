"""How the model thread hands deltas and results to callers' event loops (engine.Outbox): a step's
deltas go to each loop in one call, in the order they were made, a caller's result after its deltas;
each caller's stream is the one it gets alone; a cancelled caller leaves without holding up the others;
callers on different loops each get theirs. A job without a loop (decode_batch, training's
evaluation) still gets each delta at once on the model thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY

from modaverse_llm import engine as engine_module
from modaverse_llm import scheduler as scheduler_module
from modaverse_llm.engine import Job, Outbox, decode_batch
from modaverse_llm.transformers_backend import TransformersBackend, TransformersSettings
from modaverse_llm.types import Completion, Delta, Event, GenerationRequest, Message, Role, SamplingParams

NEVER = ("\x00never\x00",)  # a stop string the model cannot produce: each request runs to max_tokens


# -- the outbox alone ----------------------------------------------------------------------------------


class LoopThread:
    """An event loop running in a thread of its own, counting the hand-overs it gets."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.handovers = 0
        real = self.loop.call_soon_threadsafe

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.handovers += 1
            return real(*args, **kwargs)

        self.loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def drain(self) -> None:
        """Wait until everything handed over so far has run (the loop runs its callbacks in order)."""
        ran = threading.Event()
        self.loop.call_soon_threadsafe(ran.set)
        self.handovers -= 1  # not a hand-over of the outbox's
        assert ran.wait(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def loops() -> Iterator[tuple[LoopThread, LoopThread]]:
    pair = LoopThread(), LoopThread()
    yield pair
    for lt in pair:
        if not lt.loop.is_closed():
            lt.close()


def job_on(loop: asyncio.AbstractEventLoop | None, emit: Callable[[Delta], None]) -> Job:
    return Job(None, SamplingParams(), engine_module.PEFT_BASE, emit, loop=loop)  # type: ignore[arg-type]


def test_each_loop_gets_its_calls_in_one_handover_in_order(loops: tuple[LoopThread, LoopThread]) -> None:
    first, second = loops
    got: dict[str, list[object]] = {"a": [], "b": [], "c": []}
    a, b = job_on(first.loop, got["a"].append), job_on(second.loop, got["b"].append)
    c = job_on(first.loop, got["c"].append)
    outbox = Outbox()
    for step in range(3):
        outbox.deliver(a, Delta(f"a{step}"))
        outbox.deliver(b, Delta(f"b{step}"))
        outbox.deliver(c, Delta(f"c{step}"))
    outbox.post(first.loop, got["a"].append, "a:end")  # e.g. a's result, after its deltas
    assert not any(got.values()) and first.handovers == second.handovers == 0  # nothing before the flush
    outbox.flush()
    first.drain()
    second.drain()
    assert got == {
        "a": [Delta("a0"), Delta("a1"), Delta("a2"), "a:end"],
        "b": [Delta("b0"), Delta("b1"), Delta("b2")],
        "c": [Delta("c0"), Delta("c1"), Delta("c2")],
    }
    assert (first.handovers, second.handovers) == (1, 1)
    outbox.flush()  # nothing left: no empty hand-over
    assert (first.handovers, second.handovers) == (1, 1)


def test_a_job_without_a_loop_gets_its_delta_at_once_on_this_thread() -> None:
    got: list[tuple[Delta, int]] = []
    job = job_on(None, lambda delta: got.append((delta, threading.get_ident())))
    Outbox().deliver(job, Delta("now"))
    assert got == [(Delta("now"), threading.get_ident())]


def test_a_closed_loop_or_a_failing_call_holds_up_nobody(
    loops: tuple[LoopThread, LoopThread], caplog: pytest.LogCaptureFixture
) -> None:
    gone, alive = loops
    gone.close()
    got: list[str] = []

    def fails(_: object) -> None:
        raise RuntimeError("a caller's callback failed")

    outbox = Outbox()
    outbox.post(gone.loop, got.append, "never")
    outbox.post(alive.loop, fails, "x")
    outbox.post(alive.loop, got.append, "after")
    outbox.flush()  # the closed loop is skipped, no error on the model thread
    alive.drain()
    assert got == ["after"]
    assert "delivering to a caller failed" in caplog.text


# -- through the backend, with the tiny model --------------------------------------------------------------


@pytest.fixture(scope="module")
def backend(llm_model_dir: Path) -> Iterator[TransformersBackend]:
    b = TransformersBackend(TransformersSettings(model_dir=llm_model_dir, max_tokens_cap=1000))
    b.load()
    yield b
    b.unload()


def ask(words: str, max_tokens: int) -> GenerationRequest:
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=NEVER)
    return GenerationRequest((Message(Role.USER, (words,)),), sampling)


REQUESTS = [ask("tell me a long story about a red cat", 40), ask("what is this?", 20), ask("describe a blue house", 30)]


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait for ``condition`` (the timeout only turns a hang into a failure)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.005)


async def stream(backend: TransformersBackend, request: GenerationRequest) -> list[Event]:
    return [event async for event in backend.generate(request)]


async def together(backend: TransformersBackend, requests: list[GenerationRequest]) -> list[list[Event]]:
    """``requests`` streamed at once, joining the batch in one step: the model thread is held (a
    control call that waits) until all of them wait to join."""
    gate = threading.Event()
    held = asyncio.ensure_future(backend._running.call(lambda: gate.wait(30)))
    runs = [asyncio.ensure_future(stream(backend, r)) for r in requests]
    await until(lambda: len(backend._running._waiting) == len(requests), "the requests to queue")
    gate.set()
    assert await held
    return list(await asyncio.gather(*runs))


class Handovers:
    """Records what each hand-over to a loop carried (wraps engine._run_calls)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[tuple[int, list[tuple[Callable[..., object], tuple[object, ...]]]]] = []
        real = engine_module._run_calls

        def run(calls: list[tuple[Callable[..., object], tuple[object, ...]]]) -> None:
            self.batches.append((threading.get_ident(), list(calls)))
            real(calls)

        monkeypatch.setattr(engine_module, "_run_calls", run)

    def deltas(self) -> list[list[object]]:
        return [[args[0] for _, args in calls if args and isinstance(args[0], Delta)] for _, calls in self.batches]


def deltas_of(events: list[Event]) -> list[Delta]:
    return [e for e in events if isinstance(e, Delta)]


async def test_streams_are_each_callers_own_and_a_step_is_one_handover(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    alone = [await stream(backend, r) for r in REQUESTS]
    handovers = Handovers(monkeypatch)
    runs = await together(backend, REQUESTS)
    for single, run in zip(alone, runs, strict=True):
        assert run == single  # the same deltas, in the same order, then the same Completion
        final = run[-1]
        assert isinstance(final, Completion) and final.text == "".join(d.text for d in deltas_of(run))
    # They joined at one step and ran together: at most one hand-over per step (the longest request's
    # steps), carrying several callers' deltas; each caller's deltas, read hand-over by hand-over, are
    # its stream in order; results come after the step's deltas.
    per_batch = handovers.deltas()
    steps = max(r.sampling.max_tokens for r in REQUESTS)
    assert len(handovers.batches) <= steps < sum(len(deltas_of(run)) for run in runs)
    assert max(len(batch) for batch in per_batch) == len(REQUESTS)
    for run in runs:
        mine = {id(d) for d in deltas_of(run)}
        assert [d for batch in per_batch for d in batch if id(d) in mine] == deltas_of(run)
    results = 0
    for _, calls in handovers.batches:
        kinds = ["result" if fn is scheduler_module._settle else "delta" for fn, _ in calls]
        assert kinds == sorted(kinds, key=lambda k: k == "result"), kinds
        results += kinds.count("result")
    assert results == len(REQUESTS)


def cancelled() -> float:
    return REGISTRY.get_sample_value("modaverse_llm_finished_total", {"reason": "cancelled"}) or 0.0


async def test_a_cancelled_caller_leaves_and_the_others_go_on(backend: TransformersBackend) -> None:
    expected = await stream(backend, REQUESTS[0])
    before = cancelled()
    leaving = cast(AsyncGenerator[Event, None], backend.generate(ask("tell me everything", 500)))
    staying = asyncio.ensure_future(stream(backend, REQUESTS[0]))
    got = [await anext(leaving) for _ in range(3)]  # it is running alongside
    assert all(isinstance(e, Delta) for e in got)
    await leaving.aclose()  # the caller goes away: its row is cancelled at the next step
    assert await staying == expected
    await until(lambda: cancelled() == before + 1, "the cancelled row to leave")  # it had ~500 steps to go
    await until(lambda: not backend._running.engine.rows, "the batch to empty")


async def test_callers_on_two_loops_each_get_their_own_stream(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    alone = [await stream(backend, r) for r in REQUESTS[:2]]
    handovers = Handovers(monkeypatch)
    elsewhere: list[list[Event]] = []
    other = threading.Thread(target=lambda: elsewhere.append(asyncio.run(stream(backend, REQUESTS[1]))))
    other.start()
    here = await stream(backend, REQUESTS[0])
    await asyncio.to_thread(other.join, 60)
    assert [here, *elsewhere] == alone
    # Each hand-over went to one loop and carried only that loop's caller's deltas.
    mine, theirs = {id(d) for d in deltas_of(here)}, {id(d) for d in deltas_of(elsewhere[0])}
    for thread, calls in handovers.batches:
        ids = {id(args[0]) for _, args in calls if args and isinstance(args[0], Delta)}
        assert ids <= mine if thread == threading.get_ident() else ids <= theirs
    assert {thread for thread, _ in handovers.batches} == {threading.get_ident(), other.ident}


def test_decode_batch_still_emits_on_its_own_thread(backend: TransformersBackend) -> None:
    """decode_batch (training's evaluation) with plain, loop-less emits, as before."""
    h = backend._handle
    assert h is not None
    seen: list[tuple[int, str, int]] = []
    prompts = [backend.prepare(r) for r in REQUESTS]

    def emit(i: int) -> Callable[[Delta], None]:
        return lambda delta: seen.append((i, delta.text, threading.get_ident()))

    jobs = [
        Job(p, r.sampling, engine_module.PEFT_BASE, emit(i))
        for i, (p, r) in enumerate(zip(prompts, REQUESTS, strict=True))
    ]
    done = decode_batch(h, jobs)
    assert [c.completion_tokens for c in done] == [r.sampling.max_tokens for r in REQUESTS]
    for i, completion in enumerate(done):
        assert "".join(text for j, text, _ in seen if j == i) == completion.text
    assert {thread for _, _, thread in seen} == {threading.get_ident()}
    quiet = [
        Job(p, r.sampling, engine_module.PEFT_BASE, lambda _delta: None) for p, r in zip(prompts, REQUESTS, strict=True)
    ]
    assert [c.text for c in decode_batch(h, quiet)] == [c.text for c in done]

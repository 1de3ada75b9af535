"""Continuous batching in the LLM service (transformers backend) over real gRPC: requests join a
running batch at the next step, rows leave at once, results do not depend on who runs alongside,
the queue refuses with RESOURCE_EXHAUSTED and a request the KV budget can never hold with
INVALID_ARGUMENT, an out-of-memory error fails one request and the server serves on, and an adapter
unloaded under a waiting request.

Ordering is judged from the events each test records (first delta, final, error) in the order they
arrive, never from wall-clock times: a "long" request runs a few hundred greedy steps with a stop
string that never occurs, so anything that joins it finishes many steps before it does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2
from prometheus_client import REGISTRY

from modaverse_llm import engine as engine_module
from modaverse_llm import sampler as sampler_module
from modaverse_llm import scheduler as scheduler_module
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.llm.v1 import llm_pb2
from modaverse_runtime import devices

from .llm_fixtures import GREEDY, RunningLLM, media, request, rows, start_llm, text, user

pytestmark = pytest.mark.asyncio(loop_scope="module")

LENGTH = common_pb2.FINISH_REASON_LENGTH
NEVER = ["\x00never\x00"]  # a stop string the model cannot produce: runs to max_tokens (or EOS)
LONG = 400  # steps of the long request: many more than anything that joins it takes
SAMPLED: dict[str, Any] = {"temperature": 0.9, "top_p": 0.95}
CALL_TIMEOUT_S = 60.0  # a request the server never answers fails its test (DEADLINE_EXCEEDED) instead of hanging


def long_request(adapter: str = "", max_tokens: int = LONG) -> llm_pb2.GenerateRequest:
    return request([user(text("tell me everything"))], adapter=adapter, max_tokens=max_tokens, stop=NEVER, **GREEDY)


class Run:
    """One streamed call whose events land in a shared log, in the order they arrive:
    ``<name>:first`` (first delta), ``<name>:final`` or ``<name>:error``."""

    def __init__(self, stub: Any, name: str, req: llm_pb2.GenerateRequest, log: list[str]) -> None:
        self.name, self.log = name, log
        self.deltas: list[str] = []
        self.tokens: list[int] = []  # the chosen token ids (when the request asks for logprobs)
        self.final: llm_pb2.Final | None = None
        self.error: grpc.aio.AioRpcError | None = None
        self.started = asyncio.Event()  # the first delta arrived: the request is in the running batch
        self.task = asyncio.create_task(self._run(stub, req))

    async def _run(self, stub: Any, req: llm_pb2.GenerateRequest) -> None:
        try:
            async for reply in stub.Generate(req, timeout=CALL_TIMEOUT_S):
                self.tokens += [e.chosen.token_id for e in reply.logprobs]
                if reply.WhichOneof("event") == "delta":
                    if not self.deltas:
                        self.log.append(f"{self.name}:first")
                        self.started.set()
                    self.deltas.append(reply.delta)
                else:
                    self.final = reply.final
                    self.log.append(f"{self.name}:final")
        except grpc.aio.AioRpcError as exc:
            self.error = exc
            self.log.append(f"{self.name}:error")
        finally:
            self.started.set()  # never leave a waiter hanging

    async def done(self) -> Run:
        await self.task
        return self

    async def result(self) -> llm_pb2.Final:
        await self.task
        assert self.error is None, f"{self.name}: {self.error.code()} {self.error.details()}"
        assert self.final is not None and "".join(self.deltas) == self.final.text
        return self.final


async def alone(stub: Any, req: llm_pb2.GenerateRequest) -> Run:
    """``req`` on an idle server."""
    return await Run(stub, "alone", req, []).done()


def before(log: list[str], first: str, second: str) -> bool:
    return log.index(first) < log.index(second)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait for ``condition`` (the timeout only turns a hang into a failure)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.005)


async def assert_serving(running: RunningLLM) -> None:
    assert await running.health() == health_pb2.HealthCheckResponse.SERVING


def assert_refused(run: Run, code: grpc.StatusCode, words: str) -> None:
    assert run.error is not None, f"{run.name} was not refused"
    assert run.error.code() == code, (run.error.code(), run.error.details())
    assert words in str(run.error.details()), run.error.details()


# -- joining at the next step vs the static policy ---------------------------------------------------


async def race(running: RunningLLM) -> list[str]:
    """A short request sent while a long one decodes; returns the event log."""
    log: list[str] = []
    long = Run(running.stub, "long", long_request(), log)
    await long.started.wait()
    log.append("short:sent")
    sent_at = len(long.deltas)
    short = Run(running.stub, "short", request([user(text("hi"))], max_tokens=4, stop=NEVER, **GREEDY), log)
    short_final, long_final = await short.result(), await long.result()
    assert long_final.completion_tokens == LONG and long_final.finish_reason == LENGTH  # no EOS cut it short
    assert short_final.completion_tokens == 4
    assert sent_at < LONG // 2, "the long request was nearly done before the short one was sent"
    return log


async def test_a_new_request_joins_the_running_batch(llm: RunningLLM) -> None:
    log = await race(llm)
    assert before(log, "short:first", "long:final") and before(log, "short:final", "long:final"), log


async def test_static_policy_waits_for_the_batch_to_end(llm_model_dir: Path) -> None:
    running = await start_llm(llm_model_dir, llm_scheduler="static", max_tokens_cap=1000)
    try:
        log = await race(running)
        assert before(log, "long:final", "short:first"), log
    finally:
        await running.stop()


# -- results do not depend on the batch ----------------------------------------------------------------


def mixed_requests() -> list[llm_pb2.GenerateRequest]:
    """Greedy and seeded sampled requests of different prompt and answer lengths, with and without
    media and repetition penalty; each asks for logprobs to compare the chosen tokens one by one."""
    lp: dict[str, Any] = {"stop": NEVER, "logprobs": True}
    return [
        request([user(text("tell me a long story about a red cat"))], max_tokens=160, **lp, **GREEDY),
        request([user(media(rows(21)), text("what is this?"))], max_tokens=24, seed=7, **lp, **SAMPLED),
        request([user(text("sing"))], max_tokens=10, seed=99, temperature=1.3, top_k=40, repetition_penalty=1.2, **lp),
        request([user(media(rows(22, n=2)), text("describe " * 8))], max_tokens=30, **lp, **GREEDY),
        request([user(text("draw a dog"))], max_tokens=20, seed=3, **lp, **SAMPLED),
    ]


async def test_results_do_not_depend_on_rows_joining_and_leaving(llm: RunningLLM) -> None:
    reqs = mixed_requests()
    singles = [await alone(llm.stub, r) for r in reqs]
    log: list[str] = []
    runs = [Run(llm.stub, "r0", reqs[0], log)]
    for i in (1, 2):  # r1, r2 join while r0 decodes, each once the one before it is running
        await runs[-1].started.wait()
        runs.append(Run(llm.stub, f"r{i}", reqs[i], log))
    await runs[2].done()  # r2 (the shortest) has left the batch: r3 takes a freed slot, then r4
    runs.append(Run(llm.stub, "r3", reqs[3], log))
    await runs[3].started.wait()
    runs.append(Run(llm.stub, "r4", reqs[4], log))
    finals = [await run.result() for run in runs]
    for i, (single, run, final) in enumerate(zip(singles, runs, finals, strict=True)):
        assert single.final is not None
        assert run.tokens == single.tokens and len(run.tokens) == final.completion_tokens, f"r{i}"
        assert final.text == single.final.text, f"r{i}"
    # They really ran together: each joined before r0 (the longest) finished.
    for i in range(1, 5):
        assert before(log, f"r{i}:first", "r0:final"), log
    sampled = [run.tokens for run, r in zip(runs, reqs, strict=True) if r.sampling.temperature > 0]
    assert len(sampled) == 3 and all(sampled)


async def test_mixed_adapters_in_a_running_batch(llm: RunningLLM, second_adapter: Path) -> None:
    await llm.stub.LoadAdapter(llm_pb2.LoadAdapterRequest(name="second", path=str(second_adapter)))
    try:
        msgs = [user(media(rows(31)), text("sing a song"))]
        reqs = [request(msgs, adapter=a, max_tokens=m, stop=NEVER, **GREEDY) for a, m in (("second", 200), ("", 120))]
        reqs.append(request(msgs, adapter="base", max_tokens=20, stop=NEVER, seed=5, **SAMPLED))
        singles = [(await alone(llm.stub, r)).final for r in reqs]
        texts = [f.text for f in singles if f is not None]
        assert len(set(texts)) == 3  # the adapters matter
        log: list[str] = []
        runs = [Run(llm.stub, "second", reqs[0], log)]
        for name, req in (("default", reqs[1]), ("base", reqs[2])):
            await runs[-1].started.wait()
            runs.append(Run(llm.stub, name, req, log))
        assert [(await run.result()).text for run in runs] == texts
        assert before(log, "base:first", "second:final") and before(log, "base:first", "default:final"), log
    finally:
        await llm.stub.UnloadAdapter(llm_pb2.UnloadAdapterRequest(name="second"))


# -- out of memory ------------------------------------------------------------------------------------


class ForcedOOM:
    """Wraps the engine's model call (``engine._forward``): the call chosen by ``fail`` runs the real
    model first (so the KV slabs are written, as a failure part-way through would leave them) and
    then raises ``torch.OutOfMemoryError`` once. Counts the scheduler's memory releases."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: Callable[[str, int], bool]) -> None:
        self.fail, self.armed, self.released = fail, True, 0
        self.prefills = 0
        real_forward, real_release = engine_module._forward, devices.release_memory

        def forward(h: Any, embeds: torch.Tensor, mask: Any, pos: Any, cache: Any, names: list[str]) -> Any:
            out = real_forward(h, embeds, mask, pos, cache, names)
            kind = "prefill" if cache is None else "decode"
            self.prefills += kind == "prefill"
            if self.armed and self.fail(kind, self.prefills if kind == "prefill" else int(embeds.shape[0])):
                self.armed = False
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (forced by a test)")
            return out

        def release() -> None:
            self.released += 1
            real_release()

        monkeypatch.setattr(engine_module, "_forward", forward)
        monkeypatch.setattr(scheduler_module, "release_memory", release)


def oom_requests() -> tuple[llm_pb2.GenerateRequest, llm_pb2.GenerateRequest, llm_pb2.GenerateRequest]:
    survivor = request([user(text("tell me about the sea"))], max_tokens=300, stop=NEVER, seed=17, **SAMPLED)
    victim = request([user(media(rows(41)), text("and this?"))], max_tokens=40, stop=NEVER, **GREEDY)
    later = request([user(text("hello again"))], max_tokens=12, stop=NEVER, **GREEDY)
    return survivor, victim, later


async def oom_scenario(llm: RunningLLM) -> tuple[Run, Run]:
    """The survivor runs; the victim joins it; (the armed failure strikes); returns both runs."""
    survivor, victim, _ = oom_requests()
    log: list[str] = []
    first = Run(llm.stub, "survivor", survivor, log)
    await first.started.wait()
    second = Run(llm.stub, "victim", victim, log)
    await asyncio.gather(first.done(), second.done())
    return first, second


async def test_out_of_memory_in_a_decode_step_fails_the_youngest_row(
    llm: RunningLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    survivor, _, later = oom_requests()
    expected, expected_later = (await alone(llm.stub, survivor)).final, (await alone(llm.stub, later)).final
    assert expected is not None and expected_later is not None
    # The first decode step that carries both rows runs out of memory.
    oom = ForcedOOM(monkeypatch, lambda kind, n: kind == "decode" and n == 2)
    first, second = await oom_scenario(llm)
    assert not oom.armed and oom.released >= 1
    assert_refused(second, grpc.StatusCode.RESOURCE_EXHAUSTED, "ran out of memory")
    final = await first.result()  # the other row goes on, its cache and random stream untouched
    assert (final.text, final.completion_tokens) == (expected.text, expected.completion_tokens)
    again = await alone(llm.stub, later)  # the server serves on
    assert again.final is not None and again.final.text == expected_later.text
    await until(lambda: sample("modaverse_llm_running_rows") == 0, "rows left running")
    await assert_serving(llm)


async def test_out_of_memory_while_joining_fails_the_joining_request(
    llm: RunningLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    survivor, _, later = oom_requests()
    expected, expected_later = (await alone(llm.stub, survivor)).final, (await alone(llm.stub, later)).final
    assert expected is not None and expected_later is not None
    # The second prefill (the victim joining the running survivor) runs out of memory.
    oom = ForcedOOM(monkeypatch, lambda kind, n: kind == "prefill" and n == 2)
    first, second = await oom_scenario(llm)
    assert not oom.armed and oom.released >= 1
    assert_refused(second, grpc.StatusCode.RESOURCE_EXHAUSTED, "ran out of memory starting this request")
    assert not second.deltas
    final = await first.result()
    assert (final.text, final.completion_tokens) == (expected.text, expected.completion_tokens)
    again = await alone(llm.stub, later)
    assert again.final is not None and again.final.text == expected_later.text
    await assert_serving(llm)


async def test_out_of_memory_while_sampling_fails_the_youngest_row(
    llm: RunningLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's token choice runs out of memory once with two rows: the youngest fails, and the
    other's seeded draw is the one it would have made (its random number is not used up)."""
    survivor, _, _ = oom_requests()
    expected = (await alone(llm.stub, survivor)).final
    assert expected is not None
    real_sample = sampler_module.BatchSampler.sample
    armed = [True]

    def choose(self: sampler_module.BatchSampler, logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        if armed[0] and logits.shape[0] == 2:
            armed[0] = False
            raise torch.OutOfMemoryError("CUDA out of memory (forced by a test)")
        return real_sample(self, logits, uniforms)

    monkeypatch.setattr(sampler_module.BatchSampler, "sample", choose)
    first, second = await oom_scenario(llm)
    assert not armed[0]
    assert_refused(second, grpc.StatusCode.RESOURCE_EXHAUSTED, "ran out of memory")
    final = await first.result()
    assert (final.text, final.completion_tokens) == (expected.text, expected.completion_tokens)
    await assert_serving(llm)


# -- the queue, the KV budget, and an adapter unloaded under a waiting request -----------------------


def queue_depth() -> float:
    return sample("modaverse_queue_depth", queue="llm")


async def test_queue_limit_and_unloading_an_adapter_a_request_waits_for(
    llm_model_dir: Path, second_adapter: Path
) -> None:
    running = await start_llm(llm_model_dir, max_batch_size=1, max_queue=1, max_tokens_cap=1000)
    try:
        # One request runs (the only row), one waits (the only queue place), the next is refused at once.
        log: list[str] = []
        long = Run(running.stub, "long", long_request(), log)
        await long.started.wait()
        waiting = Run(running.stub, "waiting", request([user(text("hi"))], max_tokens=6, **GREEDY), log)
        await until(lambda: queue_depth() == 1, "the second request never queued")
        refused = await Run(running.stub, "refused", request([user(text("hi"))], max_tokens=6, **GREEDY), log).done()
        assert_refused(refused, grpc.StatusCode.RESOURCE_EXHAUSTED, "queue is full (1 requests waiting)")
        assert (await long.result()).completion_tokens == LONG
        assert (await waiting.result()).completion_tokens >= 1
        assert before(log, "refused:error", "long:final"), log  # refused at once, not after a wait
        assert before(log, "long:final", "waiting:first"), log  # one row: it waited for the long one
        assert queue_depth() == 0

        # Unloading an adapter: the running row that uses it finishes first (with that adapter), a
        # request for it still waiting fails NOT_FOUND, and the unload then completes.
        await running.stub.LoadAdapter(llm_pb2.LoadAdapterRequest(name="second", path=str(second_adapter)))
        uses = long_request("second", max_tokens=150)
        expected = (await alone(running.stub, uses)).final
        assert expected is not None
        log = []
        user_run = Run(running.stub, "running", uses, log)
        await user_run.started.wait()
        waiter = Run(running.stub, "waiting", request([user(text("hi"))], adapter="second", max_tokens=6), log)
        await until(lambda: queue_depth() == 1, "the request for the adapter never queued")
        await running.stub.UnloadAdapter(llm_pb2.UnloadAdapterRequest(name="second"))
        final = await user_run.result()
        assert (final.text, final.completion_tokens) == (expected.text, 150)
        await waiter.done()
        assert_refused(waiter, grpc.StatusCode.NOT_FOUND, "unloaded while the request waited")
        info = await running.stub.Info(llm_pb2.InfoRequest())
        assert [a.name for a in info.adapters] == ["default"]
        await assert_serving(running)
    finally:
        await running.stop()


async def test_kv_budget(llm_model_dir: Path) -> None:
    """MODAVERSE_MAX_KV_TOKENS 250: a request needing more alone is refused at once; two that fit one
    at a time but not together run one after the other."""
    running = await start_llm(llm_model_dir, max_kv_tokens=250, max_tokens_cap=1000)
    try:
        log: list[str] = []
        first = Run(running.stub, "first", long_request(max_tokens=150), log)
        await first.started.wait()
        second = Run(running.stub, "second", long_request(max_tokens=150), log)  # 2 x (prompt + 150) > 250
        too_big = await Run(running.stub, "too_big", long_request(max_tokens=300), log).done()
        assert_refused(too_big, grpc.StatusCode.INVALID_ARGUMENT, "MODAVERSE_MAX_KV_TOKENS")
        assert "the server allows 250" in str(too_big.error.details() if too_big.error else "")
        a, b = await first.result(), await second.result()
        assert a.text == b.text and a.completion_tokens == b.completion_tokens == 150
        assert before(log, "too_big:error", "first:final") and before(log, "first:final", "second:first"), log
        await until(lambda: sample("modaverse_llm_kv_positions") == 0, "the KV slabs were kept")
        # A small one fits beside a shorter running one (2 x (prompt + 100) <= 250): it joins at once.
        log.clear()
        first = Run(running.stub, "first", long_request(max_tokens=100), log)
        await first.started.wait()
        small = await Run(running.stub, "small", request([user(text("hi"))], max_tokens=4, **GREEDY), log).done()
        assert (await small.result()).completion_tokens >= 1
        await first.result()
        assert before(log, "small:final", "first:final"), log
        await assert_serving(running)
    finally:
        await running.stop()

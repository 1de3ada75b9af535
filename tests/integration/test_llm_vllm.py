"""vLLM backend vs transformers: same tiny model, adapter and embeddings give the same greedy text.

Runs only where vLLM is installed: ``make test-vllm`` (CPU build in .venv-vllm; ~1 min, most of it
vLLM's start). Skipped in the main suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from modaverse_llm.tiny import build_lora_adapter, ensure_tiny_llm
from modaverse_protos.llm.v1 import llm_pb2, llm_pb2_grpc

from .llm_fixtures import RunningLLM, generate, media, request, rows, start_llm, text, user

pytest.importorskip("vllm", reason="vLLM is not installed here (make test-vllm)")
pytestmark = pytest.mark.asyncio(loop_scope="module")

NEVER = ["\x00never\x00"]


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vllm-models")
    ensure_tiny_llm(root)
    return root


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pair(vllm_model_dir: Path) -> AsyncIterator[tuple[RunningLLM, RunningLLM]]:
    reference = await start_llm(vllm_model_dir)
    # max_queue 2: the concurrency tests below queue at most 2 behind the one request vLLM-CPU runs.
    served = await start_llm(vllm_model_dir, llm_impl="vllm", vllm_gpu_memory_utilization=0.2, max_queue=2)
    yield served, reference
    await served.stop()
    await reference.stop()


def cases() -> list[llm_pb2.GenerateRequest]:
    out = []
    for i, adapter in enumerate(["", "base", "default"]):
        msgs = [user(media(rows(20 + i)), media(rows(30 + i)), text("what is this?"))]
        out.append(request(msgs, adapter=adapter, max_tokens=24, stop=NEVER, temperature=0.0))
    return out


async def test_info(pair: tuple[RunningLLM, RunningLLM]) -> None:
    served, _ = pair
    info = await served.stub.Info(llm_pb2.InfoRequest())
    assert (info.backend, info.hidden_size, info.max_batch_size) == ("vllm", 256, 1)  # CPU: one at a time
    assert [a.name for a in info.adapters] == ["default"]


async def test_same_greedy_text_as_transformers(pair: tuple[RunningLLM, RunningLLM]) -> None:
    served, reference = pair
    for req in cases():
        deltas, got = await generate(served.stub, req)
        _, want = await generate(reference.stub, req)
        assert got.text == want.text, req.adapter
        assert "".join(deltas) == got.text
        assert (got.prompt_tokens, got.completion_tokens) == (want.prompt_tokens, want.completion_tokens)


async def stream_logprobs(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, req: llm_pb2.GenerateRequest
) -> tuple[list[llm_pb2.GenerateResponse], list[llm_pb2.PositionLogprobs], llm_pb2.Final]:
    replies = [reply async for reply in stub.Generate(req)]
    assert replies[-1].WhichOneof("event") == "final"
    return replies, [e for r in replies for e in r.logprobs], replies[-1].final


# Both backends run the tiny model in float32 on CPU with different kernels (vLLM's CPU attention,
# fused layers and its own log_softmax vs transformers' path), so the values differ by float32
# rounding only: at most 3.3e-6 measured on these cases (logprobs around -5). 1e-4 leaves a 30x
# margin for other CPUs/threads, and is still far below what a wrong position, adapter, media row or
# a post-temperature/penalty distribution changes (1e-2 and more on the same values).
LOGPROB_TOL = 1e-4


async def test_logprobs_equal_transformers(pair: tuple[RunningLLM, RunningLLM]) -> None:
    served, reference = pair
    for req in cases():
        req.sampling.logprobs, req.sampling.top_logprobs = True, 5
        replies, got, final = await stream_logprobs(served.stub, req)
        _, want, want_final = await stream_logprobs(reference.stub, req)
        assert final.text == want_final.text
        assert len(got) == len(want) == final.completion_tokens == want_final.completion_tokens
        assert sum(1 for r in replies[:-1] if r.logprobs) >= 2, "entries stream with the deltas"
        for p, (g, w) in enumerate(zip(got, want, strict=True)):
            where = f"adapter {req.adapter!r}, position {p}"
            assert (g.chosen.token_id, g.chosen.token) == (w.chosen.token_id, w.chosen.token), where
            assert g.chosen.token_id == g.top[0].token_id, where  # greedy
            assert [t.token_id for t in g.top] == [t.token_id for t in w.top], where
            assert [t.token for t in g.top] == [t.token for t in w.top], where
            diffs = [abs(g.chosen.logprob - w.chosen.logprob)]
            diffs += [abs(a.logprob - b.logprob) for a, b in zip(g.top, w.top, strict=True)]
            assert max(diffs) < LOGPROB_TOL, (where, max(diffs))


async def test_logprobs_of_a_stopped_and_a_sampled_request(pair: tuple[RunningLLM, RunningLLM]) -> None:
    served, reference = pair
    msgs = [user(media(rows(40)), text("what is this?"))]
    _, free, full = await stream_logprobs(
        reference.stub, request(msgs, max_tokens=24, stop=NEVER, temperature=0.0, logprobs=True)
    )
    # A stop string's tokens are listed too (vLLM holds its text back; the entries still come).
    stop = full.text[4:7]
    req = request(msgs, max_tokens=24, stop=[stop], temperature=0.0, logprobs=True)
    _, got, final = await stream_logprobs(served.stub, req)
    _, want, _ = await stream_logprobs(reference.stub, req)
    assert final.finish_reason == 1 and stop not in final.text
    assert len(got) == final.completion_tokens == len(want)
    assert [e.chosen.token_id for e in got] == [e.chosen.token_id for e in want]
    assert [e.chosen.token_id for e in got] == [e.chosen.token_id for e in free[: len(got)]]
    assert all(not e.top for e in got)  # logprobs without top_logprobs: the chosen token only
    # Sampled with temperature, top-k and a penalty: every token listed, each from the raw logits.
    # The first position depends on the prompt alone, so it equals the greedy reference's.
    sampling: dict[str, Any] = {"temperature": 0.5, "top_k": 5, "repetition_penalty": 1.5, "seed": 4}
    sampled = request(msgs, max_tokens=12, stop=NEVER, logprobs=True, top_logprobs=3, **sampling)
    _, got, final = await stream_logprobs(served.stub, sampled)
    _, want, _ = await stream_logprobs(
        reference.stub, request(msgs, max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=3)
    )
    assert len(got) == final.completion_tokens
    assert [t.token_id for t in got[0].top] == [t.token_id for t in want[0].top]
    assert [t.logprob for t in got[0].top] == pytest.approx([t.logprob for t in want[0].top], abs=LOGPROB_TOL)
    for e in got:
        values = [t.logprob for t in e.top]
        assert len(values) == 3 and values == sorted(values, reverse=True) and e.chosen.logprob <= values[0]
        same = [t.logprob for t in e.top if t.token_id == e.chosen.token_id]
        assert same == [] or same == [e.chosen.logprob]
    # Off: no entries at all.
    _, got, _ = await stream_logprobs(served.stub, request(msgs, max_tokens=6, stop=NEVER, temperature=0.0))
    assert not got


async def test_concurrent_requests_are_safe_on_cpu(pair: tuple[RunningLLM, RunningLLM]) -> None:
    served, reference = pair
    reqs = cases()
    together = await asyncio.gather(*(generate(served.stub, r) for r in reqs))
    alone = [(await generate(reference.stub, r))[1].text for r in reqs]
    assert [f.text for _, f in together] == alone


async def test_stop_string_and_adapters_at_run_time(pair: tuple[RunningLLM, RunningLLM], vllm_model_dir: Path) -> None:
    served, reference = pair
    second = vllm_model_dir / "second"
    build_lora_adapter(vllm_model_dir / "tiny" / "llm" / "base", second, seed=5, scale=0.2)
    for running in (served, reference):
        await running.stub.LoadAdapter(llm_pb2.LoadAdapterRequest(name="second", path=str(second)))
    req = request([user(text("sing a song"))], adapter="second", max_tokens=16, stop=NEVER, temperature=0.0)
    _, got = await generate(served.stub, req)
    _, want = await generate(reference.stub, req)
    assert got.text == want.text
    stop = want.text[2:4]
    req.sampling.ClearField("stop")
    req.sampling.stop.append(stop)
    _, got = await generate(served.stub, req)
    assert got.finish_reason == 1 and want.text.startswith(got.text) and stop not in got.text
    await served.stub.UnloadAdapter(llm_pb2.UnloadAdapterRequest(name="second"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await generate(served.stub, req)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_cancel_then_serve_again(pair: tuple[RunningLLM, RunningLLM]) -> None:
    served, _ = pair
    call = served.stub.Generate(request([user(text("go on"))], max_tokens=500, stop=NEVER, temperature=0.0))
    async for _ in call:
        break
    call.cancel()
    _, final = await generate(served.stub, request([user(text("hi"))], max_tokens=4, temperature=0.0))
    assert final.completion_tokens >= 1


def queue_depth() -> float:
    return REGISTRY.get_sample_value("modaverse_queue_depth", {"queue": "llm"}) or 0.0


async def test_requests_past_the_queue_limit_are_refused(pair: tuple[RunningLLM, RunningLLM]) -> None:
    """One request runs (CPU: one at a time), MODAVERSE_MAX_QUEUE (2) wait, the next is refused at
    once; the waiting ones still run, and the server keeps serving."""
    served, _ = pair
    long = request([user(text("go on and on"))], max_tokens=300, stop=NEVER, temperature=0.0)
    running = served.stub.Generate(long)
    async for _ in running:  # it runs: the next ones wait for its slot
        break
    short = request([user(text("hi"))], max_tokens=2, stop=NEVER, temperature=0.0)
    waiting = [asyncio.ensure_future(generate(served.stub, short)) for _ in range(2)]
    deadline = asyncio.get_running_loop().time() + 30
    while queue_depth() < 2:
        assert asyncio.get_running_loop().time() < deadline, "the two requests never queued"
        await asyncio.sleep(0.01)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await generate(served.stub, short)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue is full" in str(err.value.details())
    running.cancel()
    for _, final in await asyncio.gather(*waiting):
        assert final.completion_tokens == 2
    assert queue_depth() == 0
    _, final = await generate(served.stub, short)
    assert final.completion_tokens == 2


async def test_the_typed_api_is_the_installed_vllm() -> None:
    """vllm_api's Protocols (what the main virtualenv type-checks against) name vLLM's own members,
    its methods take the parameters the backend passes, and its constructors build vLLM's objects."""
    import dataclasses
    import inspect

    from typing_extensions import get_protocol_members
    from vllm import AsyncEngineArgs, SamplingParams
    from vllm.inputs import EmbedsPrompt
    from vllm.logprobs import Logprob
    from vllm.lora.request import LoRARequest
    from vllm.outputs import CompletionOutput, RequestOutput
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    from modaverse_llm import vllm_api

    def members(cls: type) -> set[str]:  # attributes, dataclass / msgspec fields, constructor parameters
        names = set(dir(cls)) | set(getattr(cls, "__struct_fields__", ()))
        names |= {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        return names | set(inspect.signature(cls).parameters)

    pairs: list[tuple[type, type]] = [
        (vllm_api.Logprob, Logprob),
        (vllm_api.CompletionOutput, CompletionOutput),
        (vllm_api.RequestOutput, RequestOutput),
        (vllm_api.LoRARequest, LoRARequest),
        (vllm_api.SamplingParams, SamplingParams),
        (vllm_api.AsyncEngine, AsyncLLM),
    ]
    for ours, theirs in pairs:
        assert get_protocol_members(ours) <= members(theirs), theirs.__name__
    for method in ("generate", "add_lora", "remove_lora", "shutdown"):
        ours_params = inspect.signature(getattr(vllm_api.AsyncEngine, method)).parameters
        theirs_params = inspect.signature(getattr(AsyncLLM, method)).parameters
        for name, param in ours_params.items():
            assert name in theirs_params and theirs_params[name].kind == param.kind, (method, name)
    assert set(vllm_api.EngineOptions.__annotations__) <= {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    assert set(vllm_api.EmbedsPrompt.__annotations__) <= set(EmbedsPrompt.__annotations__)

    lora = vllm_api.lora_request("a", 3, "/adapters/a")
    assert isinstance(lora, LoRARequest) and (lora.lora_name, lora.lora_int_id, lora.lora_path) == (
        "a",
        3,
        "/adapters/a",
    )
    params = vllm_api.delta_sampling_params(
        max_tokens=4, temperature=0.0, top_p=1.0, top_k=-1, seed=None, stop=["###"], repetition_penalty=1.0, logprobs=2
    )
    assert isinstance(params, SamplingParams) and params.output_kind == RequestOutputKind.DELTA
    assert (params.max_tokens, params.logprobs, params.stop) == (4, 2, ["###"])

"""vLLM backend vs transformers: same tiny model, adapter and embeddings give the same greedy text.

Runs only where vLLM is installed: ``make test-vllm`` (CPU build in .venv-vllm; ~1 min, most of it
vLLM's start). Skipped in the main suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from modaverse_llm.tiny import build_lora_adapter, ensure_tiny_llm
from modaverse_protos.llm.v1 import llm_pb2

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
    served = await start_llm(vllm_model_dir, llm_impl="vllm", vllm_gpu_memory_utilization=0.2)
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

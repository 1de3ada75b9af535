"""In-process LLM servers on loopback ports (real gRPC, real tiny Llama + LoRA).

A pytest plugin (``pytest_plugins`` in tests/conftest.py): the fixtures are known by their ``name``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from modaverse_llm.service import load_settings, make_spec
from modaverse_llm.settings import LLMSettings
from modaverse_llm.tiny import build_lora_adapter, ensure_tiny_llm
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.llm.v1 import llm_pb2, llm_pb2_grpc
from modaverse_runtime.tensors import from_numpy

from .in_process import InProcessServer, serve

GREEDY: dict[str, Any] = {"temperature": 0.0}


RunningLLM = InProcessServer["llm_pb2_grpc.LLMServiceAsyncStub", LLMSettings]


async def start_llm(model_dir: Path, **overrides: Any) -> RunningLLM:
    # The chosen backend's settings class: overrides may name its own fields (llm_scheduler, vllm_*).
    settings = load_settings(host="127.0.0.1", port=0, model_dir=model_dir, **overrides)
    return await serve(make_spec(settings), settings, llm_pb2_grpc.LLMServiceStub)


@pytest.fixture(scope="session", name="llm_model_dir")
def fixture_llm_model_dir(model_dir: Path) -> Path:
    ensure_tiny_llm(model_dir)
    return model_dir


@pytest.fixture(scope="session", name="second_adapter")
def fixture_second_adapter(llm_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("adapters") / "second"
    build_lora_adapter(llm_model_dir / "tiny" / "llm" / "base", out, seed=5, scale=0.2)
    return out


@pytest_asyncio.fixture(loop_scope="module", scope="module", name="llm")
async def fixture_llm(llm_model_dir: Path) -> AsyncIterator[RunningLLM]:
    running = await start_llm(llm_model_dir, max_tokens_cap=1000)
    yield running
    await running.stop()


def rows(seed: int, n: int = 1, hidden: int = 256) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).standard_normal((n, hidden)).astype(np.float32)


def media(array: np.ndarray[Any, Any], modality: int = common_pb2.MODALITY_IMAGE) -> llm_pb2.Segment:
    block = llm_pb2.EmbeddingBlock(modality=modality, rows=from_numpy(array))  # type: ignore[arg-type]
    return llm_pb2.Segment(embeddings=block)


def text(value: str) -> llm_pb2.Segment:
    return llm_pb2.Segment(text=value)


def user(*segments: llm_pb2.Segment) -> llm_pb2.Message:
    return llm_pb2.Message(role=llm_pb2.ROLE_USER, segments=list(segments))


def assistant(value: str) -> llm_pb2.Message:
    return llm_pb2.Message(role=llm_pb2.ROLE_ASSISTANT, segments=[text(value)])


def request(messages: Sequence[llm_pb2.Message], adapter: str = "", **sampling: Any) -> llm_pb2.GenerateRequest:
    return llm_pb2.GenerateRequest(
        messages=list(messages), sampling=llm_pb2.SamplingParams(**sampling), adapter=adapter
    )


async def generate(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, req: llm_pb2.GenerateRequest
) -> tuple[list[str], llm_pb2.Final]:
    deltas: list[str] = []
    final: llm_pb2.Final | None = None
    async for reply in stub.Generate(req):
        assert final is None, "nothing may follow the Final message"
        if reply.WhichOneof("event") == "delta":
            deltas.append(reply.delta)
        else:
            final = reply.final
    assert final is not None, "the stream ended without a Final message"
    return deltas, final

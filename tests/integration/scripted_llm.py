"""A scripted LLMService for gateway tests (tests only; the product always serves a real model).

The gateway's job is to orchestrate, whatever the LLM writes; to test each routing path we need
to choose what the LLM writes. This server replies with the last user text when it holds a
meta-response (``Modality: …``), and otherwise with a [TEXT] answer that reports what it received
(messages, embedding blocks and their shapes), so tests can check the encoder → LLM wiring. It
records every request. ``SLOW`` in the text makes it stream one delta per 0.2 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from grpc import aio

from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.llm.v1 import llm_pb2, llm_pb2_grpc
from modaverse_runtime.errors import FailedPrecondition
from modaverse_runtime.server import ModaverseServer, ServiceSpec
from modaverse_runtime.settings import ServerSettings
from modaverse_runtime.tensors import to_numpy

from .in_process import BackgroundLoop, start_server


class ScriptedLLM(llm_pb2_grpc.LLMServiceServicer):
    def __init__(self) -> None:
        self.requests: list[llm_pb2.GenerateRequest] = []
        self.cancelled = 0

    @staticmethod
    def describe(request: llm_pb2.GenerateRequest) -> str:
        blocks = [
            f"{s.embeddings.modality}:{tuple(to_numpy(s.embeddings.rows).shape)}"
            for m in request.messages
            for s in m.segments
            if s.HasField("embeddings")
        ]
        return f"messages={len(request.messages)} blocks={' '.join(blocks) or 'none'}"

    async def Generate(self, request: llm_pb2.GenerateRequest, context: Any) -> AsyncIterator[llm_pb2.GenerateResponse]:
        self.requests.append(request)
        last = "".join(s.text for s in request.messages[-1].segments if s.HasField("text"))
        reply = last if "Modality:" in last else f"Modality: [TEXT] Prompt: {self.describe(request)}"
        reply = reply.replace("SLOW", "").strip() + " ###"
        delay = 0.2 if "SLOW" in last else 0.0
        try:
            for start in range(0, len(reply), 8):
                if delay:
                    await asyncio.sleep(delay)
                yield llm_pb2.GenerateResponse(delta=reply[start : start + 8])
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        yield llm_pb2.GenerateResponse(
            final=llm_pb2.Final(
                text=reply,
                prompt_tokens=10,
                completion_tokens=len(reply) // 4,
                finish_reason=common_pb2.FINISH_REASON_STOP,
            )
        )

    async def Info(self, request: llm_pb2.InfoRequest, context: Any) -> llm_pb2.InfoResponse:
        return llm_pb2.InfoResponse(model="scripted", backend="scripted", hidden_size=256)

    async def LoadAdapter(self, request: Any, context: Any) -> llm_pb2.LoadAdapterResponse:
        raise FailedPrecondition("the scripted LLM has no adapters")

    async def UnloadAdapter(self, request: Any, context: Any) -> llm_pb2.UnloadAdapterResponse:
        raise FailedPrecondition("the scripted LLM has no adapters")

    async def RenderPrompt(self, request: Any, context: Any) -> llm_pb2.RenderPromptResponse:
        raise FailedPrecondition("the scripted LLM has no tokenizer")


async def start_scripted_llm(
    port: int = 0, host: str = "127.0.0.1", **settings: Any
) -> tuple[ModaverseServer, ScriptedLLM]:
    """On ``port`` (0: any free one; a fixed one lets it come back on the address a gateway knows); ``settings``:
    more of the shared server settings (TLS, tokens, connection age)."""
    servicer = ScriptedLLM()

    async def noop() -> None:
        return None

    def register(server: aio.Server) -> None:
        llm_pb2_grpc.add_LLMServiceServicer_to_server(servicer, server)

    spec = ServiceSpec("scripted-llm", ["modaverse.llm.v1.LLMService"], register, noop, noop)
    server = await start_server(spec, ServerSettings(host=host, port=port, **settings), ready_timeout=10)
    return server, servicer


@dataclass
class ScriptedServer:
    """The scripted LLM served on a background loop, for tests whose gateway and generators are processes."""

    server: ModaverseServer  # held here: a grpc.aio server that is garbage-collected stops serving
    target: str


@pytest.fixture(scope="module")
def background() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def scripted(background: BackgroundLoop) -> Iterator[ScriptedServer]:
    server, _ = background.run(start_scripted_llm())
    yield ScriptedServer(server, f"127.0.0.1:{server.port}")
    background.run(server.stop(grace=0))

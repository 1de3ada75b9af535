"""The orchestrator's direct generation over a fake backend: events, errors as statuses, admission,
metrics, and that closing the call closes the generator stream. Nothing but a generator is called."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import pytest
from grpc import aio
from prometheus_client import REGISTRY

from modaverse_gateway.backends import Backends
from modaverse_gateway.orchestrator import ChatOrchestrator
from modaverse_gateway.routes import Route, load_routes
from modaverse_gateway.settings import GatewaySettings
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.gateway.v1 import gateway_pb2
from modaverse_protos.generator.v1 import generator_pb2
from modaverse_runtime.errors import InvalidArgument, ModaverseError, NotFound, ResourceExhausted, Unavailable

ROUTES = """
generators:
  sd15: {modality: image, endpoints: ["a:1"], default: true}
  sdxl: {modality: image, endpoints: ["b:1", "c:1"]}
"""

PROGRESS = [generator_pb2.GenerateResponse(progress=generator_pb2.Progress(step=i, total_steps=2)) for i in (1, 2)]
OUTPUT = [
    generator_pb2.GenerateResponse(
        chunk=generator_pb2.Chunk(mime_type="image/png", data=b"abc", offset=0, total_bytes=3)
    ),
    generator_pb2.GenerateResponse(done=generator_pb2.Done(seed=5, elapsed_seconds=0.1, mime_type="image/png")),
]


@dataclass
class FakeBackends:
    """Only ``generate`` exists: an encoder or LLM call would be an AttributeError."""

    responses: list[generator_pb2.GenerateResponse] = field(default_factory=lambda: PROGRESS + OUTPUT)
    error: aio.AioRpcError | None = None
    calls: list[tuple[str, generator_pb2.GenerateRequest]] = field(default_factory=list)
    closed: int = 0

    def generate(
        self, route: Route, request: generator_pb2.GenerateRequest, timeout: float | None
    ) -> AsyncGenerator[generator_pb2.GenerateResponse, None]:
        self.calls.append((route.name, request))

        async def stream() -> AsyncGenerator[generator_pb2.GenerateResponse, None]:
            try:
                for response in self.responses:
                    yield response
                if self.error is not None:
                    raise self.error
            finally:
                self.closed += 1

        return stream()


def orchestrator(backends: FakeBackends, **settings: Any) -> ChatOrchestrator:
    return ChatOrchestrator(GatewaySettings(**settings), cast(Backends, backends), load_routes(None, ROUTES))


def request(prompt: str = "a red circle", **options: Any) -> gateway_pb2.GenerateRequest:
    return gateway_pb2.GenerateRequest(
        modality=common_pb2.MODALITY_IMAGE, prompt=prompt, options=gateway_pb2.GeneratorOverrides(**options)
    )


async def events(stream: AsyncIterator[gateway_pb2.ChatEvent]) -> list[gateway_pb2.ChatEvent]:
    return [event async for event in stream]


async def read_into(out: list[gateway_pb2.ChatEvent], stream: AsyncIterator[gateway_pb2.ChatEvent]) -> None:
    """Collect a stream's events (those before an error stay in ``out``)."""
    async for event in stream:
        out.append(event)


def counted(route: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("modaverse_gateway_invocations_total", {"route": route, "outcome": outcome}) or 0.0


def rpc_error(code: grpc.StatusCode, details: str) -> aio.AioRpcError:
    return aio.AioRpcError(code, aio.Metadata(), aio.Metadata(), details=details)


async def test_one_invocation_then_done_without_usage() -> None:
    backends = FakeBackends()
    ok = counted("sd15", "ok")
    out = await events(orchestrator(backends).generate(request(steps=3, seed=9), None))
    assert [e.WhichOneof("event") for e in out] == [
        "invocation_started",
        "progress",
        "progress",
        "media_chunk",
        "invocation_done",
        "done",
    ]
    started = out[0].invocation_started
    assert (started.invocation.index, started.invocation.prompt, started.invocation.model) == (
        0,
        "a red circle",
        "sd15",
    )
    assert started.invocation.modality == common_pb2.MODALITY_IMAGE
    assert started.endpoint == "a:1"
    assert {e.progress.index for e in out[1:3]} | {out[3].media_chunk.index, out[4].invocation_done.index} == {0}
    done = out[-1].done
    assert not done.HasField("usage")
    assert done.failed_invocations == 0
    assert done.elapsed_seconds > 0
    ((route, sent),) = backends.calls
    assert (route, sent.prompt, sent.steps, sent.seed) == ("sd15", "a red circle", 3, 9)
    assert backends.closed == 1
    assert counted("sd15", "ok") == ok + 1


async def test_options_model_picks_the_route() -> None:
    backends = FakeBackends()
    out = await events(orchestrator(backends).generate(request(model="sdxl"), None))
    assert backends.calls[0][0] == "sdxl"
    assert out[0].invocation_started.invocation.model == "sdxl"
    assert out[0].invocation_started.endpoint == "b:1,c:1"


async def test_bad_requests_fail_before_any_generator_call() -> None:
    backends = FakeBackends()
    with pytest.raises(NotFound, match="unknown image model 'flux'"):
        await events(orchestrator(backends).generate(request(model="flux"), None))
    with pytest.raises(InvalidArgument, match="prompt is empty"):
        await events(orchestrator(backends).generate(request(""), None))
    with pytest.raises(InvalidArgument, match="no video generator"):
        await events(
            orchestrator(backends).generate(
                gateway_pb2.GenerateRequest(modality=common_pb2.MODALITY_VIDEO, prompt="x"), None
            )
        )
    assert backends.calls == []


@pytest.mark.parametrize(
    ("code", "error", "outcome"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument, "INVALID_ARGUMENT"),
        (grpc.StatusCode.UNAVAILABLE, Unavailable, "UNAVAILABLE"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted, "RESOURCE_EXHAUSTED"),
    ],
)
async def test_a_failed_generation_ends_the_call_with_the_generators_status(
    code: grpc.StatusCode, error: type[ModaverseError], outcome: str
) -> None:
    backends = FakeBackends(responses=PROGRESS[:1], error=rpc_error(code, "width 12 is not a multiple of 8"))
    before = counted("sd15", outcome)
    seen: list[gateway_pb2.ChatEvent] = []
    with pytest.raises(error) as info:
        await read_into(seen, orchestrator(backends).generate(request(), None))
    assert type(info.value) is error
    assert info.value.message == "generator sd15: width 12 is not a multiple of 8"
    # what came before the failure was sent; no InvocationError event, no Done
    assert [e.WhichOneof("event") for e in seen] == ["invocation_started", "progress"]
    assert counted("sd15", outcome) == before + 1


async def test_closing_the_call_closes_the_generator_stream_and_frees_the_slot() -> None:
    backends = FakeBackends()
    gateway = orchestrator(backends, max_concurrent_chats=1)
    cancelled = counted("sd15", "CANCELLED")
    first = gateway.generate(request(), None)
    assert (await anext(first)).WhichOneof("event") == "invocation_started"
    assert (await anext(first)).WhichOneof("event") == "progress"
    # the one slot is taken: admission sheds at once, for a chat as for a generation
    with pytest.raises(ResourceExhausted, match="limit of 1 concurrent chats and generations"):
        await events(gateway.generate(request(), None))
    await first.aclose()  # what grpc does when the client cancels
    assert backends.closed == 1  # the generator call was closed, not left to run
    assert counted("sd15", "CANCELLED") == cancelled + 1
    assert [e.WhichOneof("event") for e in await events(gateway.generate(request(), None))][-1] == "done"

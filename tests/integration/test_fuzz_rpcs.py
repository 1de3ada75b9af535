"""Property-based fuzzing of every public RPC: random bytes as media, random dtypes and shapes in
tensors, huge, negative and non-finite numbers, deep histories. Only documented status codes may come
back, and every server must still be SERVING afterwards.

The servers (real tiny models) run on their own event loop in a background thread; hypothesis drives
them through ordinary blocking stubs.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from modaverse_protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from modaverse_protos.generator.v1 import generator_pb2, generator_pb2_grpc
from modaverse_protos.llm.v1 import llm_pb2, llm_pb2_grpc
from modaverse_runtime import samples
from modaverse_runtime.server import ModaverseServer

from .encoder_fixtures import start_encoder
from .gateway_fixtures import start_gateway
from .generator_fixtures import start_generator
from .llm_fixtures import start_llm
from .scripted_llm import start_scripted_llm

DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@dataclass
class Targets:
    encoder: str
    llm: str
    generator: str
    gateway: str


@pytest.fixture(scope="module")
def targets(model_dir: Path) -> Iterator[Targets]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(300)

    async def start() -> tuple[list[ModaverseServer], Targets]:
        enc = await start_encoder(model_dir, max_items_per_request=4, max_media_mb=1)
        llm = await start_llm(model_dir, max_tokens_cap=8, max_messages=16)
        gen = await start_generator(
            model_dir, "text-to-image", default_steps=2, max_steps=4, max_width=64, max_height=64
        )
        scripted, _ = await start_scripted_llm()
        gateway = await start_gateway(
            enc.target, f"127.0.0.1:{scripted.port}", {"image": gen.target}, max_media_items=4, max_turns=8
        )
        servers = [enc.server, llm.server, gen.server, scripted, gateway]
        return servers, Targets(enc.target, llm.target, gen.target, f"127.0.0.1:{gateway.port}")

    servers, found = run(start())
    yield found
    for server in servers:
        run(server.stop(grace=0))
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def call(target: str, fn: Callable[[grpc.Channel], Any]) -> grpc.StatusCode:
    with grpc.insecure_channel(target) as channel:
        try:
            fn(channel)
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()
            return code
    return grpc.StatusCode.OK


def assert_serving(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


REAL_MEDIA = [samples.make_image(size=32), samples.make_audio(seconds=0.3)]
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**40), 2**40).map(float))
modality = st.integers(0, 6)
media = st.builds(
    lambda m, mime, data: common_pb2.Media(modality=m, mime_type=mime, data=data),
    modality,
    st.one_of(
        st.just(""), st.sampled_from(["image/png", "audio/wav", "video/mp4", "text/plain"]), st.text(max_size=20)
    ),
    st.one_of(st.binary(max_size=600), st.sampled_from(REAL_MEDIA)),
)
tensor = st.builds(
    lambda dtype, shape, data: common_pb2.Tensor(dtype=dtype, shape=shape, data=data),
    st.integers(0, 5),
    st.lists(st.integers(-3, 300), max_size=4),
    st.binary(max_size=2048),
)


def _bounded(value: float, lo: float, hi: float) -> float:
    return value if math.isnan(value) or lo <= value <= hi else max(lo, min(hi, value))


# Texts as the encoder and the gateway's Embed take them, and as they should not come.
text_item = st.builds(
    lambda t, mime: common_pb2.Media(modality=common_pb2.MODALITY_TEXT, mime_type=mime, data=t.encode()),
    st.one_of(st.text(max_size=80), st.text(min_size=1, max_size=3).map(lambda t: t * 800)),
    st.sampled_from(["", "text/plain", "text/plain; charset=utf-8", "text/plain; charset=latin-1", "text/html"]),
)


@FUZZ
@given(st.lists(st.one_of(media, text_item), max_size=5), st.integers(0, 6), st.booleans(), st.booleans())
def test_fuzz_encode(
    targets: Targets, items: list[common_pb2.Media], dtype: int, omit: bool, omit_projected: bool
) -> None:
    request = encoder_pb2.EncodeRequest(
        media=items,
        output_dtype=dtype,  # type: ignore[arg-type]
        omit_imagebind=omit,
        omit_projected=omit_projected,
    )
    code = call(targets.encoder, lambda ch: encoder_pb2_grpc.EncoderServiceStub(ch).Encode(request, timeout=30))
    assert code in DOCUMENTED


segment = st.one_of(
    st.builds(lambda t: llm_pb2.Segment(text=t), st.text(max_size=40)),
    st.builds(lambda m, t: llm_pb2.Segment(embeddings=llm_pb2.EmbeddingBlock(modality=m, rows=t)), modality, tensor),
)
message = st.builds(lambda r, s: llm_pb2.Message(role=r, segments=s), st.integers(0, 3), st.lists(segment, max_size=3))


@FUZZ
@given(
    st.lists(message, max_size=20),
    st.integers(0, 10_000),
    numbers,
    numbers,
    st.integers(0, 2**32 - 1),
    st.lists(st.text(max_size=30), max_size=12),
    st.sampled_from(["", "default", "base", "nope"]),
)
def test_fuzz_llm_generate(
    targets: Targets,
    messages: list[llm_pb2.Message],
    max_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int,
    stop: list[str],
    adapter: str,
) -> None:
    sampling = llm_pb2.SamplingParams(
        max_tokens=max_tokens,
        temperature=_bounded(temperature, -1e30, 1e30),
        top_p=_bounded(top_p, -1e30, 1e30),
        top_k=top_k,
        stop=stop,
    )
    request = llm_pb2.GenerateRequest(messages=messages, sampling=sampling, adapter=adapter)
    code = call(targets.llm, lambda ch: list(llm_pb2_grpc.LLMServiceStub(ch).Generate(request, timeout=30)))
    assert code in DOCUMENTED


@FUZZ
@given(
    st.text(max_size=60),
    st.integers(-(2**62), 2**62),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    numbers,
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    st.sampled_from(["", "image/png", "image/jpeg", "video/mp4", "x/y"]),
)
def test_fuzz_generator(
    targets: Targets,
    prompt: str,
    seed: int,
    steps: int,
    width: int,
    height: int,
    guidance: float,
    options: dict[str, str],
    mime: str,
) -> None:
    request = generator_pb2.GenerateRequest(
        prompt=prompt,
        seed=seed,
        steps=steps % 8,
        width=width % 128,
        height=height % 128,
        guidance_scale=_bounded(guidance, -1e30, 1e30),
        options=options,
        output_mime_type=mime,
    )
    code = call(
        targets.generator, lambda ch: list(generator_pb2_grpc.GeneratorServiceStub(ch).Generate(request, timeout=60))
    )
    assert code in DOCUMENTED


turn = st.builds(
    lambda r, t, m: gateway_pb2.Turn(role=r, text=t, media=m),
    st.integers(0, 3),
    st.text(max_size=60),
    st.lists(media, max_size=3),
)


@FUZZ
@given(st.lists(turn, max_size=12), st.booleans(), st.text(max_size=10), st.integers(0, 10_000))
def test_fuzz_gateway_chat(
    targets: Targets, turns: list[gateway_pb2.Turn], meta_only: bool, model: str, steps: int
) -> None:
    overrides = {"image": gateway_pb2.GeneratorOverrides(model=model, steps=steps % 4)}
    request = gateway_pb2.ChatRequest(
        turns=turns, options=gateway_pb2.ChatOptions(meta_response_only=meta_only, generator_overrides=overrides)
    )
    code = call(targets.gateway, lambda ch: list(gateway_pb2_grpc.GatewayServiceStub(ch).Chat(request, timeout=60)))
    assert code in DOCUMENTED


def _generate_request(
    modality_: int,
    prompt: str,
    model: str,
    seed: int | None,
    steps: int | None,
    width: int | None,
    height: int | None,
    guidance: float | None,
    negative: str,
) -> gateway_pb2.GenerateRequest:
    options = gateway_pb2.GeneratorOverrides(
        model=model,
        seed=seed,
        steps=steps,
        width=width,
        height=height,
        guidance_scale=guidance,
        negative_prompt=negative,
    )
    return gateway_pb2.GenerateRequest(modality=modality_, prompt=prompt, options=options)  # type: ignore[arg-type]


def _or_unset(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), values)


# Half plausible (most of these generate, so the generator path is fuzzed too), half hostile.
generate_request = st.one_of(
    st.builds(
        _generate_request,
        st.just(common_pb2.MODALITY_IMAGE),
        st.text(min_size=1, max_size=60),
        st.sampled_from(["", "image-tiny"]),
        _or_unset(st.integers(0, 2**31)),
        _or_unset(st.integers(1, 4)),
        _or_unset(st.sampled_from([32, 64])),
        _or_unset(st.sampled_from([32, 64])),
        _or_unset(st.floats(0, 20)),
        st.text(max_size=20),
    ),
    st.builds(
        _generate_request,
        st.one_of(st.just(common_pb2.MODALITY_IMAGE), modality),
        st.one_of(st.text(max_size=60), st.just(" "), st.text(min_size=1, max_size=4).map(lambda t: t * 4001)),
        st.one_of(st.sampled_from(["image-tiny", "video-tiny", "nope"]), st.text(max_size=10)),
        _or_unset(st.integers(-(2**63), 2**63 - 1)),
        _or_unset(st.integers(0, 2**32 - 1)),
        _or_unset(st.integers(0, 2**32 - 1)),
        _or_unset(st.integers(0, 2**32 - 1)),
        _or_unset(numbers.map(lambda v: _bounded(v, -1e30, 1e30))),
        st.text(max_size=200),
    ),
)


@FUZZ
@given(generate_request)
def test_fuzz_gateway_generate(targets: Targets, request: gateway_pb2.GenerateRequest) -> None:
    code = call(targets.gateway, lambda ch: list(gateway_pb2_grpc.GatewayServiceStub(ch).Generate(request, timeout=60)))
    assert code in DOCUMENTED


@FUZZ
@given(st.lists(st.one_of(media, text_item), max_size=6))
def test_fuzz_gateway_embed(targets: Targets, items: list[common_pb2.Media]) -> None:
    request = gateway_pb2.EmbedRequest(items=items)
    code = call(targets.gateway, lambda ch: gateway_pb2_grpc.GatewayServiceStub(ch).Embed(request, timeout=30))
    assert code in DOCUMENTED


def test_every_server_is_still_serving(targets: Targets) -> None:
    for target in (targets.encoder, targets.llm, targets.generator, targets.gateway):
        assert_serving(target)

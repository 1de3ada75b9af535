"""The encoder over real gRPC on loopback: every modality, batching, and every bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client import REGISTRY

from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2
from modaverse_runtime import samples
from modaverse_runtime.tensors import to_numpy

from .encoder_fixtures import RunningEncoder, start_encoder

pytestmark = pytest.mark.asyncio(loop_scope="module")

IMAGE, AUDIO, VIDEO = common_pb2.MODALITY_IMAGE, common_pb2.MODALITY_AUDIO, common_pb2.MODALITY_VIDEO


def media(modality: common_pb2.Modality.ValueType, data: bytes, mime: str = "") -> common_pb2.Media:
    return common_pb2.Media(modality=modality, mime_type=mime, data=data)


async def encode(enc: RunningEncoder, *items: common_pb2.Media, **kw: object) -> encoder_pb2.EncodeResponse:
    request = encoder_pb2.EncodeRequest(media=list(items), **kw)  # type: ignore[arg-type]
    reply: encoder_pb2.EncodeResponse = await enc.stub.Encode(request)
    return reply


async def assert_serving(enc: RunningEncoder) -> None:
    assert await enc.health() == health_pb2.HealthCheckResponse.SERVING


async def test_health_and_reflection(encoder: RunningEncoder) -> None:
    for name in ("", "modaverse.encoder.v1.EncoderService"):
        assert await encoder.health(name) == health_pb2.HealthCheckResponse.SERVING

    def reflect() -> tuple[list[str], list[str]]:
        with grpc.insecure_channel(encoder.target) as channel:
            db = ProtoReflectionDescriptorDatabase(channel)
            services = list(db.get_services())
            fd = db.FindFileContainingSymbol("modaverse.encoder.v1.EncoderService")
            return services, [m.name for m in fd.message_type]

    services, messages = await asyncio.to_thread(reflect)
    assert "modaverse.encoder.v1.EncoderService" in services
    assert "grpc.health.v1.Health" in services
    assert "EncodeRequest" in messages


async def test_info_reports_dimensions_and_limits(encoder: RunningEncoder) -> None:
    info = await encoder.stub.Info(encoder_pb2.InfoRequest())
    assert info.encoder_model == "imagebind_tiny"
    assert (info.embed_dim, info.llm_hidden_size, info.rows_per_item) == (256, 256, 1)
    assert info.adaptor_mode == "shared"
    assert info.limits.max_items_per_request == 8
    assert {"image/png", "audio/wav", "video/mp4"} <= set(info.mime_types)
    assert info.profile == "tiny"


CASES: list[tuple[str, common_pb2.Modality.ValueType, Callable[[], bytes], str]] = [
    ("png", IMAGE, lambda: samples.make_image(fmt="PNG"), "image/png"),
    ("jpeg", IMAGE, lambda: samples.make_image("square", "blue", fmt="JPEG"), "image/jpeg"),
    ("webp", IMAGE, lambda: samples.make_image("star", "green", fmt="WEBP"), ""),
    ("gif", IMAGE, lambda: samples.make_image("cross", "yellow", fmt="GIF"), "image/gif"),
    ("wav", AUDIO, lambda: samples.make_audio(440, 2.0, 44100, 2), "audio/wav"),
    ("flac", AUDIO, lambda: samples.make_audio(880, 1.0, 22050, fmt="FLAC"), "audio/flac"),
    ("ogg", AUDIO, lambda: samples.make_audio(660, 1.0, 48000, fmt="OGG"), ""),
    ("mp3", AUDIO, lambda: samples.make_audio(330, 1.0, 44100, fmt="MP3"), "audio/mpeg"),
    ("mp4", VIDEO, lambda: samples.make_video(seconds=2.0), "video/mp4"),
    ("webm", VIDEO, lambda: samples.make_video("square", "blue", seconds=1.0, fmt="webm"), "video/webm"),
]


@pytest.mark.parametrize(("name", "modality", "make", "mime"), CASES, ids=[c[0] for c in CASES])
async def test_every_modality_and_format(
    encoder: RunningEncoder, name: str, modality: common_pb2.Modality.ValueType, make: Callable[[], bytes], mime: str
) -> None:
    reply = await encode(encoder, media(modality, make(), mime))
    (emb,) = reply.embeddings
    assert emb.modality == modality
    vector, rows = to_numpy(emb.imagebind), to_numpy(emb.projected)
    assert vector.shape == (256,)
    assert rows.shape == (1, 256)
    assert np.isfinite(vector).all()
    assert np.isfinite(rows).all()
    if modality == IMAGE:  # the vision head L2-normalises
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)


async def test_items_keep_their_order_and_match_single_requests(encoder: RunningEncoder) -> None:
    items = [
        media(IMAGE, samples.make_image("circle", "red")),
        media(AUDIO, samples.make_audio(440)),
        media(IMAGE, samples.make_image("square", "blue")),
        media(VIDEO, samples.make_video(seconds=1.0)),
        media(IMAGE, samples.make_image("triangle", "green")),
    ]
    together = await encode(encoder, *items)
    assert [e.modality for e in together.embeddings] == [IMAGE, AUDIO, IMAGE, VIDEO, IMAGE]
    for item, emb in zip(items, together.embeddings, strict=True):
        (alone,) = (await encode(encoder, item)).embeddings
        np.testing.assert_allclose(to_numpy(emb.projected), to_numpy(alone.projected), atol=1e-5)
    # different inputs give different embeddings (the model is not ignoring its input)
    first, third = (to_numpy(together.embeddings[i].imagebind) for i in (0, 2))
    assert float(np.abs(first - third).max()) > 1e-3


def _batch_stats(queue: str) -> tuple[float, float]:
    total = REGISTRY.get_sample_value("modaverse_batch_size_sum", {"queue": queue}) or 0.0
    count = REGISTRY.get_sample_value("modaverse_batch_size_count", {"queue": queue}) or 0.0
    return total, count


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def unbatched(model_dir: Path) -> AsyncIterator[RunningEncoder]:
    running = await start_encoder(model_dir, batching=False)
    yield running
    await running.stop()


async def test_batched_results_equal_unbatched(encoder: RunningEncoder, unbatched: RunningEncoder) -> None:
    shapes = ["circle", "square", "triangle", "star", "cross"]
    colors = ["red", "green", "blue"]
    images = [samples.make_image(shapes[i % 5], colors[i % 3], seed=i) for i in range(16)]
    before = _batch_stats("encoder-image")
    batched = await asyncio.gather(*(encode(encoder, media(IMAGE, d)) for d in images))
    after = _batch_stats("encoder-image")
    single = await asyncio.gather(*(encode(unbatched, media(IMAGE, d)) for d in images))
    for b, s in zip(batched, single, strict=True):
        np.testing.assert_allclose(to_numpy(b.embeddings[0].imagebind), to_numpy(s.embeddings[0].imagebind), atol=1e-5)
        np.testing.assert_allclose(to_numpy(b.embeddings[0].projected), to_numpy(s.embeddings[0].projected), atol=1e-5)
    items, calls = after[0] - before[0], after[1] - before[1]
    assert items == 16
    assert calls < 16, "16 concurrent requests should share forward passes"


async def test_output_dtype_and_omitting_imagebind(encoder: RunningEncoder) -> None:
    item = media(IMAGE, samples.make_image())
    full = (await encode(encoder, item)).embeddings[0]
    half = (await encode(encoder, item, output_dtype=common_pb2.DTYPE_FLOAT16, omit_imagebind=True)).embeddings[0]
    assert half.projected.dtype == common_pb2.DTYPE_FLOAT16
    assert not half.imagebind.data
    np.testing.assert_allclose(
        to_numpy(half.projected).astype(np.float32), to_numpy(full.projected), atol=2e-2, rtol=1e-2
    )


async def test_request_id_is_echoed(encoder: RunningEncoder) -> None:
    call = encoder.stub.Encode(
        encoder_pb2.EncodeRequest(media=[media(IMAGE, samples.make_image())]),
        metadata=(("x-request-id", "req-123"),),
    )
    await call
    assert ("x-request-id", "req-123") in list(await call.trailing_metadata())


def _png_claiming(width: int, height: int) -> bytes:
    png = samples.make_image(size=8)
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return png[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + png[33:]


BAD: list[tuple[str, Callable[[], list[common_pb2.Media]], str]] = [
    ("no items", lambda: [], "no media"),
    ("empty bytes", lambda: [media(IMAGE, b"")], "empty"),
    ("random bytes", lambda: [media(IMAGE, bytes(range(256)) * 4)], "media[0]"),
    ("truncated png", lambda: [media(IMAGE, samples.make_image()[:300], "image/png")], "media[0]"),
    ("truncated wav", lambda: [media(AUDIO, samples.make_audio()[:30], "audio/wav")], "media[0]"),
    ("truncated mp4", lambda: [media(VIDEO, samples.make_video()[:500], "video/mp4")], "media[0]"),
    ("mime contradicts bytes", lambda: [media(IMAGE, samples.make_image(), "image/jpeg")], "image/"),
    ("audio bytes as image", lambda: [media(IMAGE, samples.make_audio())], "media[0]"),
    ("unsupported mime", lambda: [media(IMAGE, samples.make_image(), "image/tiff")], "image/tiff"),
    ("unknown modality", lambda: [common_pb2.Media(modality=9, data=b"hi")], "modality 9 cannot be encoded"),  # type: ignore[arg-type]
    ("no modality", lambda: [common_pb2.Media(data=samples.make_image())], "MODALITY_UNSPECIFIED"),
    ("uri source", lambda: [common_pb2.Media(modality=IMAGE, uri="http://x/y.png")], "uri"),
    ("pixel bomb", lambda: [media(IMAGE, _png_claiming(30000, 30000))], "pixels"),
    ("too many items", lambda: [media(IMAGE, samples.make_image(size=32))] * 9, "limit is 8"),
    ("second item bad", lambda: [media(IMAGE, samples.make_image()), media(AUDIO, b"RIFF")], "media[1]"),
]


@pytest.mark.parametrize(("name", "make", "fragment"), BAD, ids=[b[0] for b in BAD])
async def test_bad_input_is_invalid_argument(
    encoder: RunningEncoder, name: str, make: Callable[[], list[common_pb2.Media]], fragment: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await encode(encoder, *make())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert fragment.lower() in (info.value.details() or "").lower()
    await assert_serving(encoder)


async def test_bad_output_dtype(encoder: RunningEncoder) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await encode(encoder, media(IMAGE, samples.make_image()), output_dtype=99)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def strict(model_dir: Path) -> AsyncIterator[RunningEncoder]:
    running = await start_encoder(
        model_dir,
        max_media_mb=0.25,
        max_message_mb=1,
        max_audio_seconds=1.5,
        max_video_seconds=1.5,
        max_image_pixels=100_000,
    )
    yield running
    await running.stop()


LIMITS: list[tuple[str, Callable[[], common_pb2.Media], str]] = [
    ("audio too long", lambda: media(AUDIO, samples.make_audio(seconds=3.0, sample_rate=8000)), "second"),
    ("video too long", lambda: media(VIDEO, samples.make_video(seconds=3.0, size=64)), "second"),
    ("image over pixel limit", lambda: media(IMAGE, samples.make_image(size=400)), "pixels"),
    (
        "media over byte limit",
        lambda: media(AUDIO, samples.make_audio(seconds=1.4, sample_rate=48000, channels=2)),
        "bytes",
    ),
]


@pytest.mark.parametrize(("name", "make", "fragment"), LIMITS, ids=[x[0] for x in LIMITS])
async def test_limits_are_enforced(
    strict: RunningEncoder, name: str, make: Callable[[], common_pb2.Media], fragment: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await encode(strict, make())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (info.value.details() or "")
    await assert_serving(strict)


async def test_oversize_message_is_resource_exhausted(strict: RunningEncoder) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await encode(strict, media(IMAGE, b"\x89PNG" + b"\0" * (2 * 2**20)))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await assert_serving(strict)

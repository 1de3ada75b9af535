"""Texts through the encoder over real gRPC: ImageBind's own tokenizer and text branch, checked against the
model called directly (not through the encoder's code), mixed with media, batched, and every bad text."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from importlib.metadata import distribution
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2
from prometheus_client import REGISTRY

from modaverse_encoder.architectures import architecture_kwargs
from modaverse_encoder.checkpoint import read_arch_config
from modaverse_encoder.imagebind_compat import imagebind_model_module, imagebind_preprocessors_module
from modaverse_encoder.tiny import tiny_encoder_dir
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2
from modaverse_runtime import samples
from modaverse_runtime.tensors import to_numpy

from .encoder_fixtures import RunningEncoder, start_encoder

pytestmark = pytest.mark.asyncio(loop_scope="module")

TEXT, IMAGE, AUDIO = common_pb2.MODALITY_TEXT, common_pb2.MODALITY_IMAGE, common_pb2.MODALITY_AUDIO
PROMPTS = ["a red circle", "A photo of a dog barking at the sea.", "un cercle rouge, très grand", "🚀 launch"]


def text(value: str | bytes, mime: str = "text/plain") -> common_pb2.Media:
    data = value.encode() if isinstance(value, str) else value
    return common_pb2.Media(modality=TEXT, mime_type=mime, data=data)


def image(shape: str = "circle", color: str = "red") -> common_pb2.Media:
    return common_pb2.Media(modality=IMAGE, data=samples.make_image(shape, color))


async def encode(enc: RunningEncoder, *items: common_pb2.Media, **kw: object) -> encoder_pb2.EncodeResponse:
    reply: encoder_pb2.EncodeResponse = await enc.stub.Encode(encoder_pb2.EncodeRequest(media=list(items), **kw))  # type: ignore[arg-type]
    return reply


def vectors(reply: encoder_pb2.EncodeResponse) -> np.ndarray:
    return np.stack([to_numpy(e.imagebind) for e in reply.embeddings])


def reference_text_embeddings(model_dir: Path, texts: list[str]) -> np.ndarray:
    """What ImageBind itself computes: its ``load_and_transform_text`` (SimpleTokenizer over the package's BPE
    vocabulary, one text at a time, concatenated) and ``model({"text": tokens})``, on a whole ImageBindModel
    (every branch) loaded from the tiny checkpoint with torch.load and load_state_dict."""
    root = tiny_encoder_dir(model_dir) / "imagebind"
    arch, overrides = read_arch_config(root)
    model = imagebind_model_module().ImageBindModel(**architecture_kwargs(arch, overrides))
    model.load_state_dict(torch.load(root / "imagebind.pth", map_location="cpu", weights_only=True), strict=True)
    model.eval()
    bpe = distribution("imagebind-unofficial").locate_file("imagebind/bpe/bpe_simple_vocab_16e6.txt.gz")
    tokenizer = imagebind_preprocessors_module().SimpleTokenizer(bpe_path=str(bpe))
    tokens = torch.cat([tokenizer(t).unsqueeze(0) for t in texts], dim=0)  # load_and_transform_text
    with torch.no_grad():
        out: torch.Tensor = model({"text": tokens})["text"]
    return out.numpy()


async def test_info_lists_text_and_its_limit(encoder: RunningEncoder) -> None:
    info = await encoder.stub.Info(encoder_pb2.InfoRequest())
    assert list(info.modalities) == [IMAGE, common_pb2.MODALITY_VIDEO, AUDIO, TEXT]
    assert "text/plain" in info.mime_types
    assert info.limits.max_text_chars == 2000


async def test_text_embeddings_equal_imagebinds_own_text_path(encoder: RunningEncoder, model_dir: Path) -> None:
    reply = await encode(encoder, *(text(p) for p in PROMPTS))
    assert [e.modality for e in reply.embeddings] == [TEXT] * len(PROMPTS)
    assert all(not e.HasField("projected") for e in reply.embeddings)  # texts get no adaptor rows
    assert all(e.imagebind.dtype == common_pb2.DTYPE_FLOAT32 for e in reply.embeddings)
    got = vectors(reply)
    assert got.shape == (len(PROMPTS), 256)
    expected = await asyncio.to_thread(reference_text_embeddings, model_dir, PROMPTS)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    # The text head L2-normalises, then multiplies by its logit scale (learnable; 1/0.07 at init, as here).
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1 / 0.07, rtol=1e-4)
    assert reply.encoder_id and reply.encoder_model == "imagebind_tiny"


async def test_same_text_same_vector_different_texts_differ(encoder: RunningEncoder) -> None:
    once = vectors(await encode(encoder, text("a red circle")))
    twice = vectors(await encode(encoder, text("a red circle")))
    np.testing.assert_array_equal(once, twice)  # the same call twice: bit for bit
    first = vectors(await encode(encoder, text("a red circle"), text("a blue square"), text("a red circle")))
    np.testing.assert_allclose(first[0], first[2], atol=1e-5)
    np.testing.assert_allclose(first[0], once[0], atol=1e-5)  # in another batch: equal to rounding
    assert float(np.abs(first[0] - first[1]).max()) > 1e-2
    # the tokenizer's clean-up: case and runs of whitespace do not matter, as in ImageBind
    np.testing.assert_array_equal(vectors(await encode(encoder, text("  A  RED\tcircle "))), once)


async def test_a_text_past_the_context_is_cut_at_75_tokens_as_imagebind_does(encoder: RunningEncoder) -> None:
    words = " ".join(f"word{i}" for i in range(200))
    long_a, long_b = vectors(await encode(encoder, text(words), text(words + " and then something else")))
    np.testing.assert_allclose(long_a, long_b, atol=1e-6)


async def test_text_and_media_mixed_keep_request_order(encoder: RunningEncoder) -> None:
    items = [
        text("a red circle"),
        image("circle", "red"),
        common_pb2.Media(modality=AUDIO, data=samples.make_audio(440)),
        text("a blue square", mime=""),  # no type: a text item is text/plain
        image("square", "blue"),
    ]
    together = await encode(encoder, *items)
    assert [e.modality for e in together.embeddings] == [TEXT, IMAGE, AUDIO, TEXT, IMAGE]
    assert [e.HasField("projected") for e in together.embeddings] == [False, True, True, False, True]
    for item, emb in zip(items, together.embeddings, strict=True):
        (alone,) = (await encode(encoder, item)).embeddings
        np.testing.assert_allclose(to_numpy(emb.imagebind), to_numpy(alone.imagebind), atol=1e-5)
        if emb.HasField("projected"):
            np.testing.assert_allclose(to_numpy(emb.projected), to_numpy(alone.projected), atol=1e-5)


async def test_omit_projected_leaves_every_item_without_rows(encoder: RunningEncoder) -> None:
    items = [image(), text("a red circle"), image("star", "green")]
    full = await encode(encoder, *items)
    bare = await encode(encoder, *items, omit_projected=True)
    assert [e.HasField("projected") for e in bare.embeddings] == [False, False, False]
    np.testing.assert_allclose(vectors(bare), vectors(full), atol=1e-5)
    assert bare.ByteSize() < full.ByteSize()


async def test_callers_with_and_without_rows_share_a_batch(encoder: RunningEncoder) -> None:
    images = [image(s, c) for s, c in (("circle", "red"), ("square", "blue"), ("star", "green"), ("cross", "yellow"))]
    alone = [await encode(encoder, item) for item in images]
    before = _batch_stats("encoder-image")
    together = await asyncio.gather(
        *(encode(encoder, item, omit_projected=i % 2 == 0) for i, item in enumerate(images))
    )
    after = _batch_stats("encoder-image")
    assert after[1] - before[1] < len(images), "the four requests should share forward passes"
    for i, (mixed, single) in enumerate(zip(together, alone, strict=True)):
        (got,), (expected,) = mixed.embeddings, single.embeddings
        np.testing.assert_allclose(to_numpy(got.imagebind), to_numpy(expected.imagebind), atol=1e-5)
        assert got.HasField("projected") == (i % 2 == 1)
        if got.HasField("projected"):
            np.testing.assert_allclose(to_numpy(got.projected), to_numpy(expected.projected), atol=1e-5)


def _batch_stats(queue: str) -> tuple[float, float]:
    total = REGISTRY.get_sample_value("modaverse_batch_size_sum", {"queue": queue}) or 0.0
    count = REGISTRY.get_sample_value("modaverse_batch_size_count", {"queue": queue}) or 0.0
    return total, count


async def test_concurrent_texts_share_forward_passes_and_equal_unbatched(
    encoder: RunningEncoder, model_dir: Path
) -> None:
    prompts = [f"a {c} {s}" for c in ("red", "green", "blue", "yellow") for s in ("circle", "square", "star")]
    before = _batch_stats("encoder-text")
    batched = await asyncio.gather(*(encode(encoder, text(p)) for p in prompts))
    after = _batch_stats("encoder-text")
    assert after[0] - before[0] == len(prompts)
    assert after[1] - before[1] < len(prompts), "concurrent texts should share forward passes"
    unbatched = await start_encoder(model_dir, batching=False)
    try:
        single = [await encode(unbatched, text(p)) for p in prompts]
    finally:
        await unbatched.stop()
    for b, s in zip(batched, single, strict=True):
        np.testing.assert_allclose(vectors(b), vectors(s), atol=1e-5)


BAD: list[tuple[str, Callable[[], list[common_pb2.Media]], dict[str, bool], str]] = [
    ("empty text", lambda: [text("")], {}, "media[0] (text): the text is empty"),
    ("blank text", lambda: [text(" \n\t ")], {}, "media[0] (text): the text is empty"),
    ("invalid utf-8", lambda: [text(b"caf\xe9 au lait")], {}, "media[0] (text): not valid UTF-8 (byte 3"),
    (
        "over the limit",
        lambda: [image(), text("x" * 2001)],
        {},
        "media[1] (text): 2001 characters of text; the limit is 2000",
    ),
    ("another type", lambda: [text("a cat", mime="text/html")], {}, "texts are text/plain in UTF-8"),
    ("another charset", lambda: [text("a cat", mime="text/plain; charset=latin-1")], {}, "texts are text/plain"),
    ("text uri", lambda: [common_pb2.Media(modality=TEXT, uri="http://x/y.txt")], {}, "uri sources are not fetched"),
    ("text without its vector", lambda: [text("a cat")], {"omit_imagebind": True}, "do not set omit_imagebind"),
    ("nothing left", lambda: [image()], {"omit_imagebind": True, "omit_projected": True}, "leave nothing to return"),
    ("too many items", lambda: [text("a cat")] * 9, {}, "limit is 8"),
]


@pytest.mark.parametrize(("name", "make", "options", "fragment"), BAD, ids=[b[0] for b in BAD])
async def test_bad_texts_are_invalid_argument(
    encoder: RunningEncoder,
    name: str,
    make: Callable[[], list[common_pb2.Media]],
    options: dict[str, bool],
    fragment: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await encode(encoder, *make(), **options)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert fragment in (info.value.details() or ""), info.value.details()
    assert await encoder.health() == health_pb2.HealthCheckResponse.SERVING


async def test_a_charset_utf8_parameter_is_accepted(encoder: RunningEncoder) -> None:
    plain = vectors(await encode(encoder, text("a cat", mime="text/plain")))
    declared = vectors(await encode(encoder, text("a cat", mime="Text/Plain; charset=UTF-8")))
    np.testing.assert_array_equal(plain, declared)

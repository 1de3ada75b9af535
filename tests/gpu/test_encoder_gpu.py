"""ImageBind-huge (random weights) + a 1024→4096 adaptor served on the GPU in fp16."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from modaverse_encoder.service import make_spec
from modaverse_encoder.settings import EncoderSettings
from modaverse_encoder.tiny import build_random_encoder
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from modaverse_runtime import samples
from modaverse_runtime.server import ModaverseServer
from modaverse_runtime.tensors import to_numpy

pytestmark = pytest.mark.needs_cuda


@pytest.fixture(scope="module")
def huge_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    given = os.environ.get("MODAVERSE_GPU_ARTIFACTS")
    if given and (Path(given) / "adaptor").is_dir():
        yield Path(given)
        return
    root = tmp_path_factory.mktemp("huge")
    build_random_encoder(root, "imagebind_huge", hidden_size=4096, device="cuda")
    torch.cuda.empty_cache()
    yield root


def settings_for(root: Path, **overrides: object) -> EncoderSettings:
    return EncoderSettings(
        host="127.0.0.1",
        port=0,
        profile="full",
        device="cuda",
        imagebind_checkpoint=root / "imagebind" / "imagebind.pth",
        adaptor_path=root / "adaptor",
        **overrides,  # type: ignore[arg-type]
    )


async def _serve_and_encode(settings: EncoderSettings, requests: list[list[common_pb2.Media]]):
    server = ModaverseServer(make_spec(settings), settings)
    port = await server.start()
    started = time.perf_counter()
    await server.wait_ready(600)
    load_s = time.perf_counter() - started
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = encoder_pb2_grpc.EncoderServiceStub(channel)
            info = await stub.Info(encoder_pb2.InfoRequest())
            replies = await asyncio.gather(*(stub.Encode(encoder_pb2.EncodeRequest(media=m)) for m in requests))
    finally:
        await server.stop(grace=1)
    return info, replies, load_s


def test_huge_loads_on_gpu_in_fp16_and_encodes(huge_artifacts: Path) -> None:
    torch.cuda.reset_peak_memory_stats()
    image = common_pb2.Media(modality=common_pb2.MODALITY_IMAGE, data=samples.make_image())
    audio = common_pb2.Media(modality=common_pb2.MODALITY_AUDIO, data=samples.make_audio(440, 3.0, 44100))
    text = common_pb2.Media(modality=common_pb2.MODALITY_TEXT, data=b"a red circle")
    info, (reply,), load_s = asyncio.run(_serve_and_encode(settings_for(huge_artifacts), [[image, audio, text]]))
    assert info.encoder_model == "imagebind_huge"
    assert (info.embed_dim, info.llm_hidden_size) == (1024, 4096)
    assert info.dtype == common_pb2.DTYPE_FLOAT16
    assert info.device.startswith("cuda")
    for emb in reply.embeddings[:2]:
        assert to_numpy(emb.imagebind).shape == (1024,)
        assert emb.projected.dtype == common_pb2.DTYPE_FLOAT16
        assert to_numpy(emb.projected).shape == (1, 4096)
        assert np.isfinite(to_numpy(emb.imagebind)).all()
    words = reply.embeddings[2]  # the text branch in fp16: a vector, no rows
    assert not words.HasField("projected")
    vector = to_numpy(words.imagebind)
    assert vector.shape == (1024,) and np.isfinite(vector).all()
    assert np.linalg.norm(vector) == pytest.approx(1 / 0.07, rel=1e-2)  # random init: the initial logit scale
    peak_gib = torch.cuda.max_memory_allocated() / 2**30
    print(f"\nimagebind_huge vision+audio+text fp16: load {load_s:.1f}s, peak GPU memory {peak_gib:.2f} GiB")
    # vision (~630M) + audio (~90M) + text (~350M) params in fp16 ≈ 2.0 GiB; depth/thermal/imu are never loaded.
    assert peak_gib < 3.0


def test_batched_equals_unbatched_on_gpu(huge_artifacts: Path) -> None:
    images = [
        [common_pb2.Media(modality=common_pb2.MODALITY_IMAGE, data=samples.make_image(s, c))]
        for s, c in [("circle", "red"), ("square", "blue"), ("star", "green"), ("cross", "yellow")] * 2
    ]
    _, batched, _ = asyncio.run(_serve_and_encode(settings_for(huge_artifacts, batch_max_wait_ms=50), images))
    _, single, _ = asyncio.run(_serve_and_encode(settings_for(huge_artifacts, batching=False), images))
    for b, s in zip(batched, single, strict=True):
        vb, vs = to_numpy(b.embeddings[0].imagebind), to_numpy(s.embeddings[0].imagebind)
        # fp16 kernels may pick different tilings for different batch sizes
        np.testing.assert_allclose(vb, vs, atol=5e-3)

"""Generators on a GPU in fp16: full-size architectures with random weights (no checkpoints).

Stable Diffusion 1.5's UNet/VAE/CLIP-L text encoder are built from their published
configs; text-to-video uses ModelScope 1.7B's UNet3D shape (with a CLIP-L text encoder
instead of OpenCLIP-H to keep the build short); the tiny pipelines of every kind check
the fp16 and CPU-offload paths. Each test serves through the real gRPC server.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch

from modaverse_generators.imports import diffusers, transformers
from modaverse_generators.service import make_spec
from modaverse_generators.settings import GeneratorSettings
from modaverse_generators.tiny import clip_tokenizer, ensure_tiny_generator
from modaverse_protos.generator.v1 import generator_pb2, generator_pb2_grpc
from modaverse_runtime.media import DecodedImage, DecodedVideo, MediaKind, MediaLimits, decode_media
from modaverse_runtime.server import ModaverseServer

pytestmark = pytest.mark.needs_cuda


def clip_l() -> Any:
    t = transformers()
    config = t.CLIPTextConfig(
        hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
        vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
    )  # fmt: skip
    return t.CLIPTextModel(config)


def sd15_vae() -> Any:
    return diffusers().AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=512,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )  # fmt: skip


def build_sd15(directory: Path) -> None:
    d = diffusers()
    with torch.device("cuda"):
        unet = d.UNet2DConditionModel(
            sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
            cross_attention_dim=768, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        )  # fmt: skip
        pipe = d.StableDiffusionPipeline(
            vae=sd15_vae(), text_encoder=clip_l(), tokenizer=clip_tokenizer(), unet=unet,
            scheduler=d.PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                      skip_prk_steps=True, steps_offset=1),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )  # fmt: skip
    pipe.to(torch.float16).save_pretrained(directory)


def build_modelscope_like(directory: Path) -> None:
    d = diffusers()
    with torch.device("cuda"):
        unet = d.UNet3DConditionModel(
            sample_size=32, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
            cross_attention_dim=768, attention_head_dim=64,
            down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
            up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
        )  # fmt: skip
        pipe = d.TextToVideoSDPipeline(
            vae=sd15_vae(), text_encoder=clip_l(), tokenizer=clip_tokenizer(), unet=unet,
            scheduler=d.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        )  # fmt: skip
    pipe.to(torch.float16).save_pretrained(directory)


async def generate(settings: GeneratorSettings, **fields: Any) -> tuple[bytes, generator_pb2.Done, int, float]:
    """Serve, run one request; returns (file, done, progress events, peak GiB)."""
    server = ModaverseServer(make_spec(settings), settings)
    await server.start()
    try:
        await server.wait_ready(600)
        torch.cuda.reset_peak_memory_stats()
        data, done, progress = b"", None, 0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = generator_pb2_grpc.GeneratorServiceStub(channel)
            info = await stub.Info(generator_pb2.InfoRequest())
            assert info.device.startswith("cuda")
            async for r in stub.Generate(generator_pb2.GenerateRequest(**fields), timeout=600):
                which = r.WhichOneof("event")
                progress += which == "progress"
                data += r.chunk.data if which == "chunk" else b""
                done = r.done if which == "done" else done
        assert done is not None
        return data, done, progress, torch.cuda.max_memory_allocated() / 2**30
    finally:
        await server.stop(grace=1)


def test_sd15_sized_text_to_image_fp16(tmp_path: Path) -> None:
    build_sd15(tmp_path / "sd15")
    torch.cuda.empty_cache()
    settings = GeneratorSettings(
        host="127.0.0.1", port=0, profile="full", generator_model=str(tmp_path / "sd15"), generator_kind="text-to-image"
    )
    start = time.perf_counter()
    data, done, progress, peak = asyncio.run(generate(settings, prompt="a red circle", seed=1, steps=25))
    print(f"\nSD1.5-sized 512px, 25 steps fp16: {time.perf_counter() - start:.1f}s, peak {peak:.2f} GiB")
    image = decode_media(MediaKind.IMAGE, data, "image/png", MediaLimits())
    assert isinstance(image, DecodedImage) and image.image.size == (512, 512) == (done.width, done.height)
    assert progress == 26  # PNDM's warm-up step
    assert peak < 6.0  # fp16 SD1.5 (~2 GiB weights) at batch 1


def test_sd15_sized_batch_of_four_and_cpu_offload(tmp_path: Path) -> None:
    build_sd15(tmp_path / "sd15")
    torch.cuda.empty_cache()
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "profile": "full",
        "generator_model": str(tmp_path / "sd15"),
    }

    async def four(settings: GeneratorSettings) -> float:
        server = ModaverseServer(make_spec(settings), settings)
        await server.start()
        try:
            await server.wait_ready(600)
            torch.cuda.reset_peak_memory_stats()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = generator_pb2_grpc.GeneratorServiceStub(channel)

                async def one(i: int) -> None:
                    request = generator_pb2.GenerateRequest(prompt=f"p{i}", seed=i, steps=10)
                    async for _ in stub.Generate(request, timeout=600):
                        pass

                await asyncio.gather(*(one(i) for i in range(4)))
            return torch.cuda.max_memory_allocated() / 2**30
        finally:
            await server.stop(grace=1)

    peak_batched = asyncio.run(four(GeneratorSettings(**base, batch_max_wait_ms=500)))
    peak_offload = asyncio.run(four(GeneratorSettings(**base, batching=False, cpu_offload=True)))
    print(f"\nbatch of 4 peak {peak_batched:.2f} GiB; one at a time with CPU offload peak {peak_offload:.2f} GiB")
    assert peak_offload < peak_batched


def test_modelscope_sized_text_to_video_fp16(tmp_path: Path) -> None:
    build_modelscope_like(tmp_path / "t2v")
    torch.cuda.empty_cache()
    settings = GeneratorSettings(
        host="127.0.0.1", port=0, profile="full", generator_model=str(tmp_path / "t2v"), generator_kind="text-to-video"
    )
    start = time.perf_counter()
    data, done, progress, peak = asyncio.run(generate(settings, prompt="a dog running", seed=1))
    print(f"\nModelScope-sized 256px 16 frames 25 steps fp16: {time.perf_counter() - start:.1f}s, peak {peak:.2f} GiB")
    video = decode_media(MediaKind.VIDEO, data, "video/mp4", MediaLimits())
    assert isinstance(video, DecodedVideo)
    assert (video.width, video.height, video.num_frames, video.fps) == (256, 256, 16, 10.0)
    assert progress == 25 and done.num_frames == 16  # DPMSolverMultistep (swapped in, as the release does)


@pytest.mark.parametrize("kind", ["text-to-image", "text-to-video", "text-to-audio"])
def test_tiny_pipelines_in_fp16_on_cuda(tmp_path: Path, kind: str) -> None:
    ensure_tiny_generator(tmp_path, kind)
    settings = GeneratorSettings(host="127.0.0.1", port=0, model_dir=tmp_path, generator_kind=kind)
    data, done, progress, _ = asyncio.run(generate(settings, prompt="a red circle", seed=3))
    assert progress > 0 and done.total_bytes == len(data) > 0 and done.seed == 3
    media_kind = {"text-to-image": MediaKind.IMAGE, "text-to-video": MediaKind.VIDEO}.get(kind, MediaKind.AUDIO)
    decode_media(media_kind, data, done.mime_type, MediaLimits())  # a valid file of the asked type

"""Train a few steps, export, and serve the export with the real services (no conversion step).

The served answers must be exactly what the trainer's own evaluation decodes (same prompt builder,
same decode loop, greedy), and the encoder must project with the trained adaptor.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import torch

from modaverse import AsyncClient
from modaverse.types import Done, MetaResponse
from modaverse_encoder.settings import EncoderSettings
from modaverse_llm.tiny import ensure_tiny_llm
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2
from modaverse_runtime.tensors import to_numpy
from modaverse_training.builder import build_examples, read_captions
from modaverse_training.evaluate import generate
from modaverse_training.export import EXPORT_INFO
from modaverse_training.pipeline import RunResult, RunSpec, run
from modaverse_training.schema import Example, Invocation, MediaRef
from modaverse_training.shapes import WorldCounts, generate_world
from modaverse_training.trainer import TrainConfig

from .encoder_fixtures import RunningEncoder, start_encoder
from .gateway_fixtures import start_gateway
from .llm_fixtures import start_llm

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Trained:
    result: RunResult
    world: Path
    served: Path  # a model dir whose tiny profile is the export


@pytest.fixture(scope="module")
def trained(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("train-export")
    world = root / "world"
    files = generate_world(world, WorldCounts(images=30, audio=5, video=0), seed=3)
    items = [item for kind, path in files.items() for item in read_captions(path, kind)]
    served = root / "served"
    spec = RunSpec(
        train=build_examples(items, 64, seed=1),
        train_root=world,
        eval=build_examples(items, 8, seed=2),
        eval_root=world,
        base=str(ensure_tiny_llm(model_dir) / "base"),
        encoder=EncoderSettings(model_dir=model_dir),
        run_dir=root / "run",
        cache_dir=root / "features",
        config=TrainConfig(steps=8, batch_size=8, lr=5e-3, base_lr=1e-3, warmup=2, progress=False, threads=1),
        train_base=True,
        export_dir=served / "tiny",
    )
    return Trained(run(spec), world, served)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def services(trained: Trained) -> AsyncIterator[tuple[RunningEncoder, AsyncClient]]:
    encoder = await start_encoder(trained.served)
    llm = await start_llm(trained.served)
    gateway = await start_gateway(encoder.target, llm.target)
    client = AsyncClient(f"127.0.0.1:{gateway.port}", timeout=120)
    yield encoder, client
    await client.close()
    await gateway.stop(1)
    await llm.stop()
    await encoder.stop()


async def test_export_has_the_serving_layout(trained: Trained) -> None:
    tiny = trained.served / "tiny"
    for path in (
        "llm/base/model.safetensors",
        "llm/base/tokenizer.json",
        "llm/adapters/default/adapter_config.json",
        "llm/adapters/default/adapter_model.safetensors",
        "encoder/imagebind/imagebind.pth",
        "encoder/imagebind/config.json",
        "encoder/adaptor/adaptor.safetensors",
        EXPORT_INFO,
    ):
        assert (tiny / path).is_file(), path
    assert json.loads((tiny / EXPORT_INFO).read_text())["trainable_parameters"] == trained.result.trainable


async def test_encoder_projects_with_the_trained_adaptor(
    trained: Trained, services: tuple[RunningEncoder, AsyncClient]
) -> None:
    encoder, _ = services
    image = (trained.world / "images/img_00001.png").read_bytes()
    reply = await encoder.stub.Encode(
        encoder_pb2.EncodeRequest(media=[common_pb2.Media(modality=common_pb2.MODALITY_IMAGE, data=image)])
    )
    (emb,) = reply.embeddings
    vector = torch.from_numpy(to_numpy(emb.imagebind).copy())
    with torch.no_grad():
        expected = trained.result.model.project("image", vector[None])[0]  # whitened inputs, trained adaptor
    np.testing.assert_allclose(to_numpy(emb.projected), expected.numpy(), atol=1e-5)


async def test_served_answers_equal_the_trainers_own_decoding(
    trained: Trained, services: tuple[RunningEncoder, AsyncClient]
) -> None:
    _, client = services
    model = trained.result.model
    path = trained.world / "images/img_00002.png"
    cases = [
        Example("Describe this image.", (MediaRef("image", str(path)),), (Invocation("text", "x"),)),
        Example("Draw a green star.", (), (Invocation("image", "x"),)),
    ]
    vectors = [model.features.new_zeros(0, model.features.shape[1])] * 2
    reply = await _encoder_vector(services[0], path.read_bytes())
    vectors[0] = reply[None]
    expected = generate(model, cases, vectors, max_tokens=24)
    assert all(expected), expected  # not vacuous: the trained model writes something
    for case, want in zip(cases, expected, strict=True):
        events = [
            e
            async for e in client.stream(
                case.instruction, images=[path.read_bytes()] if case.media else [], max_tokens=24, temperature=0.0
            )
        ]
        meta = next(e for e in events if isinstance(e, MetaResponse))
        assert isinstance(events[-1], Done)
        assert meta.raw == want


async def _encoder_vector(encoder: RunningEncoder, data: bytes) -> torch.Tensor:
    reply = await encoder.stub.Encode(
        encoder_pb2.EncodeRequest(media=[common_pb2.Media(modality=common_pb2.MODALITY_IMAGE, data=data)])
    )
    return torch.from_numpy(to_numpy(reply.embeddings[0].imagebind).copy())

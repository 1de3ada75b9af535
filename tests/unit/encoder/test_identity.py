"""The encoder's id: equal for replicas deployed alike, different when anything that decides the rows differs."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch

from modaverse_encoder.artifacts import resolve_artifacts
from modaverse_encoder.identity import encoder_id
from modaverse_encoder.settings import EncoderSettings

CPU = torch.device("cpu")


def test_the_id_follows_weights_dtype_device_and_transforms(model_dir: Path, tmp_path: Path) -> None:
    settings = EncoderSettings(model_dir=model_dir)
    artifacts = resolve_artifacts(settings)
    base = encoder_id(artifacts, settings, torch.float32, CPU)
    assert encoder_id(resolve_artifacts(settings), EncoderSettings(model_dir=model_dir), torch.float32, CPU) == base
    assert encoder_id(artifacts, settings, torch.float16, CPU) != base
    assert encoder_id(artifacts, settings, torch.float32, torch.device("cuda", 0)) != base
    assert encoder_id(artifacts, EncoderSettings(model_dir=model_dir, audio_clips=2), torch.float32, CPU) != base
    adaptor = tmp_path / "adaptor"
    shutil.copytree(artifacts.adaptor_dir, adaptor)
    moved = dataclasses.replace(artifacts, adaptor_dir=adaptor)
    assert encoder_id(moved, settings, torch.float32, CPU) == base  # where the files are does not matter
    weights = next(p for p in adaptor.iterdir() if p.suffix == ".safetensors")
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit of one weight
    assert encoder_id(moved, settings, torch.float32, CPU) != base

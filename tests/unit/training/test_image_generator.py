"""The image-generator trainer's mechanics on a run of a few steps: what it saves loads through the service's
loaders and generates; the VAE's scaling factor comes from the latents; the losses fall; a seed fixes it."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from modaverse_training.image_generator import (
    GeneratorTrainConfig,
    TrainingSet,
    generator_dirs,
    render_training_set,
    train_image_generator,
)
from modaverse_training.progress import Progress

SIZE = 32  # pixels: latents of 16x16, the smallest the UNet (two downsamplings) takes comfortably
CONFIG = GeneratorTrainConfig(
    image_size=SIZE,
    vae_steps=12,
    vae_batch_size=4,
    vae_lr=3e-3,
    steps=3,
    batch_size=4,
    latent_mix=0.5,
    text_lr=1e-4,  # the joint text-encoder path too
    text_warmup_steps=3,
    signal_free_from=500,  # some signal-free rows in each batch of 4
    guidance_scale=7.5,
    warmup=1,
    encode_batch_size=8,
    threads=1,
)


@dataclass
class Run:
    dirs: dict[str, Path]
    summary: dict[str, Any]
    progress: str


@pytest.fixture(scope="module")
def data() -> TrainingSet:
    return render_training_set(12, size=SIZE, seed=3)


def _run(root: Path, data: TrainingSet, seed: int = 0) -> Run:
    out = io.StringIO()
    dirs = generator_dirs(root)
    summary = train_image_generator(dirs, data=data, config=CONFIG, progress=Progress("lines", out), seed=seed)
    return Run(dirs, summary, out.getvalue())


@pytest.fixture(scope="module")
def run(data: TrainingSet, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(tmp_path_factory.mktemp("generator-a"), data)


def test_training_set_cycles_through_the_world(data: TrainingSet) -> None:
    assert data.pixels.shape == (12, 3, SIZE, SIZE) and data.pixels.dtype == torch.uint8
    first = ["a red circle", "a red square", "a red triangle", "a red star", "a red cross", "a green circle"]
    assert data.captions[:6] == first
    red_circle = data.pixels[0].float()
    background = red_circle[:, 0, 0]  # a corner: light grey
    assert background.min() > 190 and (background.max() - background.min()) < 40
    assert (red_circle[0] > 200).logical_and(red_circle[1] < 60).any()  # some red pixels


def test_saved_folders_load_as_the_service_loads_them_and_generate(run: Run) -> None:
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

    t2i = AutoPipelineForText2Image.from_pretrained(run.dirs["text-to-image"])
    t2i.set_progress_bar_config(disable=True)
    assert type(t2i).__name__ == "StableDiffusionPipeline"
    (image,) = t2i(
        "a red circle", height=SIZE, width=48, num_inference_steps=2, generator=torch.Generator().manual_seed(0)
    ).images
    assert image.size == (48, SIZE)

    i2i = AutoPipelineForImage2Image.from_pretrained(run.dirs["image-to-image"])
    i2i.set_progress_bar_config(disable=True)
    assert type(i2i).__name__ == "StableDiffusionImg2ImgPipeline"
    source = Image.new("RGB", (SIZE, SIZE), (230, 230, 230))
    (edited,) = i2i("a blue star", image=source, strength=0.5, num_inference_steps=4).images
    assert edited.size == (SIZE, SIZE)
    for part in ("unet", "vae", "text_encoder"):  # both kinds share the trained weights
        assert _weights(run.dirs["text-to-image"], part).keys() == _weights(run.dirs["image-to-image"], part).keys()
        for name, tensor in _weights(run.dirs["text-to-image"], part).items():
            assert torch.equal(tensor, _weights(run.dirs["image-to-image"], part)[name]), (part, name)


def test_scaling_factor_is_one_over_the_latents_std(run: Run, data: TrainingSet) -> None:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(run.dirs["text-to-image"], subfolder="vae")
    with torch.no_grad():
        latents = vae.encode(data.pixels.float() / 127.5 - 1).latent_dist.mean
    std = float(latents.std())
    assert vae.config.scaling_factor == pytest.approx(1 / std, rel=1e-4)
    assert run.summary["latent_std"] == pytest.approx(std, rel=1e-4)
    assert vae.config.scaling_factor != pytest.approx(0.18215)  # not the constructor's default


def test_losses_fall_and_every_phase_shows_progress(run: Run) -> None:
    losses = run.summary["vae_losses"]
    assert len(losses) == CONFIG.vae_steps
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses
    assert run.summary["unet_steps"] == CONFIG.steps
    assert run.summary["images"] == 12 and run.summary["captions"] == 12
    assert len(run.summary["text_losses"]) == CONFIG.text_warmup_steps
    assert run.summary["text_losses"][-1] < run.summary["text_losses"][0]
    stages = (
        "training generator autoencoder",
        "encoding generator latents",
        "warming up generator text encoder",
        "training generator denoiser",
    )
    for stage in stages:
        assert f"{stage}: started" in run.progress
        assert f"{stage}: done" in run.progress
    assert "saving generator: done, 2 pipelines" in run.progress


def test_a_seed_fixes_the_weights(run: Run, data: TrainingSet, tmp_path: Path) -> None:
    again = _run(tmp_path / "b", data)
    assert again.summary["vae_losses"] == run.summary["vae_losses"]
    for part in ("unet", "vae", "text_encoder"):
        first, second = _weights(run.dirs["text-to-image"], part), _weights(again.dirs["text-to-image"], part)
        assert first.keys() == second.keys()
        assert all(torch.equal(first[k], second[k]) for k in first), part
    other = _run(tmp_path / "c", data, seed=1)
    assert other.summary["vae_losses"] != run.summary["vae_losses"]


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no generator kind text-to-video"):
        train_image_generator({"text-to-video": tmp_path}, config=CONFIG)


def _weights(folder: Path, part: str) -> dict[str, torch.Tensor]:
    (file,) = (folder / part).glob("*.safetensors")
    return load_file(file)

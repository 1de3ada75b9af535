"""Tiny pipelines are the release's classes; registry, settings-driven limits, wrong-model detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modaverse_generators.artifacts import resolve_model
from modaverse_generators.base import GENERATORS
from modaverse_generators.diffusers_generator import DiffusersGenerator
from modaverse_generators.image import TextToImage
from modaverse_generators.service import make_generator
from modaverse_generators.settings import GeneratorSettings
from modaverse_generators.tiny import clip_tokenizer, ensure_tiny_generator, roberta_tokenizer, tiny_generator_dir
from modaverse_runtime.errors import FailedPrecondition

RELEASE_CLASSES = {
    "text-to-image": ("StableDiffusionPipeline", "PNDMScheduler", "UNet2DConditionModel"),
    "image-to-image": ("StableDiffusionImg2ImgPipeline", "PNDMScheduler", "UNet2DConditionModel"),
    "text-to-video": ("TextToVideoSDPipeline", "DPMSolverMultistepScheduler", "UNet3DConditionModel"),
    "text-to-audio": ("AudioLDMPipeline", "DDIMScheduler", "UNet2DConditionModel"),
}


def test_registry_names_every_kind() -> None:
    assert GENERATORS.names() == ["image-to-image", "text-to-audio", "text-to-image", "text-to-video"]
    assert GENERATORS.resolve("text-to-image") is TextToImage
    with pytest.raises(FailedPrecondition, match="unknown generator 'text-to-smell'"):
        GENERATORS.resolve("text-to-smell")


def test_tokenizers() -> None:
    clip = clip_tokenizer()
    assert len(clip) == 49408
    assert clip("a red circle").input_ids == [49406, 320, 736, 7117, 49407]  # CLIP's real ids
    roberta = roberta_tokenizer()
    ids = roberta("hi").input_ids
    assert ids[0] == 0 and ids[-1] == 2 and len(ids) == 4


@pytest.mark.parametrize("kind", sorted(RELEASE_CLASSES))
def test_tiny_builds_are_saved_with_the_release_classes(model_dir: Path, kind: str) -> None:
    path = ensure_tiny_generator(model_dir, kind)
    assert ensure_tiny_generator(model_dir, kind) == path  # built once
    index = json.loads((path / "model_index.json").read_text())
    pipeline, scheduler, unet = RELEASE_CLASSES[kind]
    assert index["_class_name"] == pipeline
    assert index["scheduler"][1] == scheduler and index["unet"][1] == unet
    assert list(path.glob("unet/*.safetensors"))


def test_limits_follow_profile_and_overrides() -> None:
    full = make_generator(GeneratorSettings(profile="full", generator_kind="text-to-video"))
    assert isinstance(full, DiffusersGenerator)
    assert full.describe() == "text-to-video (not loaded)"  # construction is cheap: nothing loads
    lim = full.param_specs
    assert (lim["steps"].default, lim["fps"].default, lim["width"].default) == (25, 10, 256)
    tuned = make_generator(
        GeneratorSettings(generator_kind="text-to-audio", max_duration_s=3.0, default_steps=2, max_width=999)
    )
    assert isinstance(tuned, DiffusersGenerator)
    lim = tuned.param_specs
    assert (lim["duration_seconds"].maximum, lim["steps"].default) == (3.0, 2)
    assert "width" not in lim  # width does not apply to audio
    with pytest.raises(FailedPrecondition, match=r"default_duration_s 1\.0 is above max_duration_s"):
        make_generator(GeneratorSettings(generator_kind="text-to-audio", max_duration_s=0.5))
    with pytest.raises(FailedPrecondition, match="default_width: width 100 is not a multiple of 8"):
        make_generator(GeneratorSettings(generator_kind="text-to-image", default_width=100))


def test_a_model_of_another_kind_is_refused_at_load(model_dir: Path) -> None:
    image_model = ensure_tiny_generator(model_dir, "text-to-image")
    wrong = make_generator(GeneratorSettings(generator_kind="text-to-video", generator_model=str(image_model)))
    with pytest.raises(FailedPrecondition, match=r"StableDiffusionPipeline .* is not a text-to-video pipeline"):
        wrong.load()
    assert not wrong.ready


def test_unknown_scheduler_is_refused(model_dir: Path) -> None:
    gen = make_generator(GeneratorSettings(generator_kind="text-to-audio", model_dir=model_dir, scheduler="Nope"))
    with pytest.raises(FailedPrecondition, match="unknown diffusers scheduler 'Nope'"):
        gen.load()


def test_model_path_per_profile(model_dir: Path) -> None:
    release = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert resolve_model(GeneratorSettings(profile="full"), "text-to-image", release) == release
    explicit = GeneratorSettings(profile="full", generator_model="/models/sdxl")
    assert resolve_model(explicit, "text-to-image", release) == "/models/sdxl"
    tiny = GeneratorSettings(model_dir=model_dir)
    assert resolve_model(tiny, "text-to-image", release) == str(tiny_generator_dir(model_dir, "text-to-image"))
    with pytest.raises(FailedPrecondition, match="no tiny build for text-to-smell; set MODAVERSE_GENERATOR_MODEL"):
        resolve_model(tiny, "text-to-smell", "")


def test_image_to_image_shares_the_text_to_image_weights(model_dir: Path) -> None:
    """Built from the same components and seed, so the two tiny kinds differ only in the pipeline class."""
    t2i, i2i = ensure_tiny_generator(model_dir, "text-to-image"), ensure_tiny_generator(model_dir, "image-to-image")
    for part in ("unet", "vae", "text_encoder"):
        (a,) = (t2i / part).glob("*.safetensors")
        (b,) = (i2i / part).glob("*.safetensors")
        assert a.read_bytes() == b.read_bytes(), part

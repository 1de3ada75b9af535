"""Tiny pipelines are the release's classes; registry, settings-driven limits, wrong-model detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modaverse_generators.base import GENERATORS
from modaverse_generators.diffusers_generator import DiffusersGenerator
from modaverse_generators.image import TextToImage
from modaverse_generators.service import make_generator
from modaverse_generators.settings import GeneratorSettings
from modaverse_generators.tiny import clip_tokenizer, ensure_tiny_generator, roberta_tokenizer
from modaverse_runtime.errors import FailedPrecondition

RELEASE_CLASSES = {
    "text-to-image": ("StableDiffusionPipeline", "PNDMScheduler", "UNet2DConditionModel"),
    "text-to-video": ("TextToVideoSDPipeline", "DPMSolverMultistepScheduler", "UNet3DConditionModel"),
    "text-to-audio": ("AudioLDMPipeline", "DDIMScheduler", "UNet2DConditionModel"),
}


def test_registry_names_every_kind() -> None:
    assert GENERATORS.names() == ["text-to-audio", "text-to-image", "text-to-video"]
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
    lim = full.limits
    assert (lim.default_steps, lim.default_fps, lim.default_width) == (25, 10, 256)
    tuned = make_generator(
        GeneratorSettings(generator_kind="text-to-audio", max_duration_s=3.0, default_steps=2, max_width=999)
    )
    assert isinstance(tuned, DiffusersGenerator)
    lim = tuned.limits
    assert (lim.max_duration_s, lim.default_steps, lim.max_width) == (3.0, 2, 0)  # width does not apply to audio
    with pytest.raises(FailedPrecondition, match=r"default_duration_s 1\.0 is above max_duration_s"):
        make_generator(GeneratorSettings(generator_kind="text-to-audio", max_duration_s=0.5))


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

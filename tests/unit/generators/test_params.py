"""Request validation on its own: defaults, every limit, options, output types, batch keys."""

from __future__ import annotations

import math
from typing import Any

import pytest

from modaverse_generators.audio import TextToAudio
from modaverse_generators.base import GenerationRequest, Limits
from modaverse_generators.image import TextToImage
from modaverse_generators.params import SEED_LIMIT, resolve_params
from modaverse_generators.video import TextToVideo
from modaverse_runtime.errors import InvalidArgument

IMAGE = (TextToImage.spec, TextToImage.tiny_limits)
VIDEO = (TextToVideo.spec, TextToVideo.tiny_limits)
AUDIO = (TextToAudio.spec, TextToAudio.tiny_limits)


def limits(base: Limits) -> Limits:
    from dataclasses import replace

    return replace(base, max_prompt_chars=50)


def resolve(kind: Any, **fields: Any) -> Any:
    spec, base = kind
    return resolve_params(GenerationRequest(**{"prompt": "a cat", **fields}), spec, limits(base))


def test_defaults_are_filled_in_per_kind() -> None:
    image = resolve(IMAGE, seed=3)
    assert (image.steps, image.width, image.height, image.mime_type, image.seed) == (4, 64, 64, "image/png", 3)
    assert (image.num_frames, image.duration_s) == (0, 0.0)
    video = resolve(VIDEO)
    assert (video.num_frames, video.fps, video.mime_type) == (8, 10, "video/mp4")
    audio = resolve(AUDIO)
    assert (audio.duration_s, audio.mime_type, audio.width) == (1.0, "audio/wav", 0)
    assert audio.guidance_scale == 2.5


def test_unset_seed_is_random_and_in_range() -> None:
    seeds = {resolve(IMAGE).seed for _ in range(20)}
    assert len(seeds) > 1 and all(0 <= s < SEED_LIMIT for s in seeds)


def test_explicit_values_pass_through() -> None:
    p = resolve(
        VIDEO, seed=SEED_LIMIT - 1, steps=7, guidance_scale=0.0, width=128, height=8, num_frames=32, fps=60,
        mime_type=" Video/WebM; codecs=vp9 ", options={"eta": " 0.5 "},
    )  # fmt: skip
    assert (p.seed, p.steps, p.guidance_scale, p.width, p.height, p.num_frames, p.fps) == (
        SEED_LIMIT - 1, 7, 0.0, 128, 8, 32, 60,
    )  # fmt: skip
    assert p.mime_type == "video/webm" and p.options == (("eta", 0.5),)


@pytest.mark.parametrize(
    ("kind", "fields", "message"),
    [
        (IMAGE, {"prompt": ""}, "prompt is empty"),
        (IMAGE, {"prompt": "\n\t "}, "prompt is empty"),
        (IMAGE, {"prompt": "x" * 51}, "prompt is 51 characters, over the limit of 50"),
        (IMAGE, {"negative_prompt": "x" * 51}, "negative_prompt is 51 characters"),
        (IMAGE, {"seed": -5}, "seed -5 is out of range"),
        (IMAGE, {"seed": SEED_LIMIT}, "is out of range"),
        (IMAGE, {"steps": 0}, "steps 0 is out of range; it must be between 1 and 500"),
        (IMAGE, {"steps": 501}, "steps 501 is out of range"),
        (IMAGE, {"guidance_scale": 51.0}, "guidance_scale 51.0 is out of range"),
        (IMAGE, {"guidance_scale": math.inf}, "guidance_scale inf is out of range"),
        (IMAGE, {"width": 63}, "width 63 is not a multiple of 8"),
        (IMAGE, {"height": 4}, "height 4 is out of range"),
        (IMAGE, {"width": 512}, "width 512 is out of range; it must be between 8 and 256"),
        (IMAGE, {"fps": 10}, "fps does not apply to image"),
        (IMAGE, {"mime_type": "image/gif"}, "output mime type 'image/gif' is not supported for image"),
        (IMAGE, {"options": {"bogus": "1"}}, "unknown option 'bogus'; accepted options: eta, guidance_rescale"),
        (IMAGE, {"options": {"eta": "-0.1"}}, "option eta=-0.1 is out of range [0, 1]"),
        (IMAGE, {"options": {"eta": "nan"}}, "option eta=nan is out of range"),
        (VIDEO, {"num_frames": 33}, "num_frames 33 is out of range; it must be between 1 and 32"),
        (VIDEO, {"fps": 0}, "fps 0 is out of range"),
        (VIDEO, {"duration_s": 2.0}, "duration_seconds does not apply to video"),
        (VIDEO, {"mime_type": "image/png"}, "not supported for video; choose video/mp4, video/webm"),
        (AUDIO, {"duration_s": 10.5}, "duration_seconds 10.5 is out of range"),
        (AUDIO, {"duration_s": math.nan}, "duration_seconds nan is out of range"),
        (AUDIO, {"height": 64}, "height does not apply to audio"),
        (AUDIO, {"num_frames": 3}, "num_frames does not apply to audio"),
    ],
)
def test_bad_requests_name_the_field_and_limit(kind: Any, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=None) as err:
        resolve(kind, **fields)
    assert message in err.value.message


def test_batch_key_ignores_prompts_seeds_fps_and_output_type() -> None:
    a = resolve(VIDEO, prompt="a", negative_prompt="x", seed=1, fps=8, mime_type="video/webm")
    b = resolve(VIDEO, prompt="b", seed=2, fps=24)
    assert a.batch_key() == b.batch_key()
    for change in ({"steps": 5}, {"width": 32}, {"num_frames": 4}, {"guidance_scale": 1.0}, {"options": {"eta": "1"}}):
        assert resolve(VIDEO, **change).batch_key() != b.batch_key(), change

"""Request validation on its own: defaults, every limit, options, output types, batch keys."""

from __future__ import annotations

import math
from typing import Any

import pytest

from modaverse_generators.audio import TextToAudio
from modaverse_generators.base import GenerationRequest, InputImage
from modaverse_generators.image import TextToImage
from modaverse_generators.image_to_image import ImageToImage
from modaverse_generators.params import SEED_LIMIT, Bounds, KindSpec, ParamSpec, resolve_params
from modaverse_generators.video import TextToVideo
from modaverse_runtime.errors import InvalidArgument
from modaverse_runtime.media import MediaKind

IMAGE = TextToImage.spec.for_profile("tiny")
VIDEO = TextToVideo.spec.for_profile("tiny")
AUDIO = TextToAudio.spec.for_profile("tiny")
REQUEST_FIELDS = {"prompt", "negative_prompt", "seed", "mime_type", "options", "params", "image"}


def resolve(spec: KindSpec, **fields: Any) -> Any:
    """Fields as the request's (``duration_s`` for ``duration_seconds``); parameters go into ``params``."""
    params = {("duration_seconds" if k == "duration_s" else k): v for k, v in fields.items() if k not in REQUEST_FIELDS}
    request = {k: v for k, v in fields.items() if k in REQUEST_FIELDS}
    merged = {**request.pop("params", {}), **params}
    return resolve_params(GenerationRequest(**{"prompt": "a cat", **request, "params": merged}), spec, 50, "kind-x")


def test_defaults_are_filled_in_per_kind() -> None:
    image = resolve(IMAGE, seed=3)
    values = image.values
    assert (values["steps"], values["width"], values["height"], image.mime_type, image.seed) == (
        20,
        64,
        64,
        "image/png",
        3,
    )
    assert "num_frames" not in values and "duration_seconds" not in values  # not image parameters
    video = resolve(VIDEO)
    assert (video.values["num_frames"], video.values["fps"], video.mime_type) == (8, 10, "video/mp4")
    audio = resolve(AUDIO)
    assert (audio.values["duration_seconds"], audio.mime_type, "width" in audio.values) == (1.0, "audio/wav", False)
    assert audio.values["guidance_scale"] == 2.5
    assert "eta" not in image.values  # an option without a default: the pipeline's own default applies


def test_unset_seed_is_random_and_in_range() -> None:
    seeds = {resolve(IMAGE).seed for _ in range(20)}
    assert len(seeds) > 1 and all(0 <= s < SEED_LIMIT for s in seeds)


def test_explicit_values_pass_through() -> None:
    p = resolve(
        VIDEO, seed=SEED_LIMIT - 1, steps=7, guidance_scale=0.0, width=128, height=8, num_frames=32, fps=60,
        mime_type=" Video/WebM; codecs=vp9 ", options={"eta": " 0.5 "},
    )  # fmt: skip
    v = p.values
    assert (p.seed, v["steps"], v["guidance_scale"], v["width"], v["height"], v["num_frames"], v["fps"]) == (
        SEED_LIMIT - 1, 7, 0.0, 128, 8, 32, 60,
    )  # fmt: skip
    assert p.mime_type == "video/webm" and v["eta"] == 0.5
    assert all(isinstance(v[name], int) for name in ("steps", "width", "height", "num_frames", "fps"))


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
        (IMAGE, {"guidance_scale": 51.0}, "guidance_scale 51 is out of range; it must be between 0 and 50"),
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
    assert resolve(VIDEO, params={"eta": 1.0}).batch_key() == resolve(VIDEO, options={"eta": "1"}).batch_key()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"params": {"steps": 2.5}}, "steps 2.5 is not a whole number"),
        ({"params": {"eta": 1.5}}, "eta 1.5 is out of range; it must be between 0 and 1"),
        ({"params": {"eta": 0.5}, "options": {"eta": "0.5"}}, "eta is given twice"),
        ({"params": {"strength": 0.5}}, "strength does not apply to image generation by kind-x; its parameters: eta,"),
        ({"options": {"steps": "4"}}, "unknown option 'steps'; accepted options: eta, guidance_rescale"),
    ],
)
def test_parameters_by_name_are_checked_like_fields(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        resolve(IMAGE, **fields)
    assert message in err.value.message


def test_a_new_parameter_needs_only_its_spec() -> None:
    """Validation, defaults, integer handling and the batch key follow the declaration alone."""
    spec = KindSpec(
        MediaKind.IMAGE,
        ("image/png",),
        (
            ParamSpec("strength", 0.0, 1.0, 0.8, exclusive_minimum=True, tiny=Bounds(0.5, 1.0)),
            ParamSpec("tiles", 1, 64, 4, integer=True, multiple_of=4),
            ParamSpec("loudness", 0.0, 2.0, 1.0, per_row=True, passed=False),
        ),
    ).for_profile("tiny")
    p = resolve(spec, params={"tiles": 8.0})
    assert p.values == {"strength": 0.5, "tiles": 8, "loudness": 1.0} and isinstance(p.values["tiles"], int)
    assert p.batch_key() == resolve(spec, params={"tiles": 8, "loudness": 2.0}).batch_key()
    assert p.batch_key() != resolve(spec, params={"tiles": 8, "strength": 0.9}).batch_key()
    for params, message in [
        ({"strength": 0.0}, "strength 0 is out of range; it must be above 0 and at most 1"),
        ({"tiles": 6}, "tiles 6 is not a multiple of 4"),
        ({"tiles": 68}, "tiles 68 is out of range; it must be between 1 and 64"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            resolve(spec, params=params)
    assert spec.options == ("loudness", "strength", "tiles")  # none has a field of its own


def test_profiles_pick_their_bounds() -> None:
    declared = {p.name: p for p in TextToImage.spec.params}
    full, tiny = declared["width"].for_profile("full"), declared["width"].for_profile("tiny")
    assert (full.default, full.maximum, tiny.default, tiny.maximum) == (512, 1024, 64, 256)
    assert declared["guidance_scale"].for_profile("tiny").default == 7.5  # one value for both profiles


def test_an_input_image_is_required_by_the_kinds_that_take_one_and_refused_by_the_others() -> None:
    png = InputImage(b"\x89PNG")
    image_to_image = ImageToImage.spec.for_profile("tiny")
    assert resolve(image_to_image, image=png).values["strength"] == 0.8
    with pytest.raises(
        InvalidArgument, match="image is missing: kind-x transforms an input image; send one in 'image'"
    ):
        resolve(image_to_image)
    with pytest.raises(InvalidArgument, match="image does not apply to kind-x"):
        resolve(IMAGE, image=png)
    for strength, message in [
        (0.0, "strength 0 is out of range; it must be above 0 and at most 1"),
        (1.5, "strength 1.5"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            resolve(image_to_image, image=png, params={"strength": strength})


def test_a_per_row_parameter_cannot_be_a_pipeline_argument() -> None:
    with pytest.raises(ValueError, match="a per-row parameter is used by the kind itself"):
        ParamSpec("loudness", 0.0, 2.0, 1.0, per_row=True)

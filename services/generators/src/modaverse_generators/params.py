"""Request validation: every parameter checked against the deployment's limits, defaults filled in.

Each problem is an InvalidArgument whose message names the field, the value and the limit.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace

from modaverse_runtime.errors import InvalidArgument
from modaverse_runtime.media import MediaKind

from .base import GenerationParams, GenerationRequest, Limits

MAX_GUIDANCE_SCALE = 50.0
MAX_FPS = 60
SEED_LIMIT = 2**63  # Done.seed is an int64


@dataclass(frozen=True)
class OptionSpec:
    """A model-specific extra passed to the pipeline call as a number in [minimum, maximum]."""

    minimum: float
    maximum: float
    integer: bool = False


@dataclass(frozen=True)
class KindSpec:
    """What a generator kind accepts: its modality, output types (default first) and parameters."""

    modality: MediaKind
    mime_types: tuple[str, ...]
    options: Mapping[str, OptionSpec]
    uses_size: bool = False
    uses_frames: bool = False
    uses_duration: bool = False


def _int_in(name: str, value: int | None, default: int, maximum: int, minimum: int = 1) -> int:
    if value is None:
        return default
    if value < minimum or value > maximum:
        raise InvalidArgument(f"{name} {value} is out of range; it must be between {minimum} and {maximum}")
    return value


def _size(name: str, value: int | None, default: int, maximum: int) -> int:
    size = _int_in(name, value, default, maximum, minimum=8)
    if size % 8:
        raise InvalidArgument(f"{name} {size} is not a multiple of 8")
    return size


def _not_applicable(spec: KindSpec, request: GenerationRequest) -> None:
    given = {
        "width": (request.width, spec.uses_size),
        "height": (request.height, spec.uses_size),
        "num_frames": (request.num_frames, spec.uses_frames),
        "fps": (request.fps, spec.uses_frames),
        "duration_seconds": (request.duration_s, spec.uses_duration),
    }
    for name, (value, applies) in given.items():
        if value is not None and not applies:
            raise InvalidArgument(f"{name} does not apply to {spec.modality.value} generation")


def _prompt(name: str, text: str, limit: int, required: bool) -> str:
    if required and not text.strip():
        raise InvalidArgument(f"{name} is empty")
    if len(text) > limit:
        raise InvalidArgument(f"{name} is {len(text)} characters, over the limit of {limit}")
    return text


def _options(spec: KindSpec, options: Mapping[str, str]) -> tuple[tuple[str, float], ...]:
    parsed: list[tuple[str, float]] = []
    for key in sorted(options):
        option = spec.options.get(key)
        if option is None:
            accepted = ", ".join(sorted(spec.options)) or "none"
            raise InvalidArgument(f"unknown option {key!r}; accepted options: {accepted}")
        raw = options[key].strip()
        try:
            value = float(int(raw)) if option.integer else float(raw)
        except ValueError:
            kind = "an integer" if option.integer else "a number"
            raise InvalidArgument(f"option {key}={raw!r} is not {kind}") from None
        if not (math.isfinite(value) and option.minimum <= value <= option.maximum):
            raise InvalidArgument(f"option {key}={raw} is out of range [{option.minimum:g}, {option.maximum:g}]")
        parsed.append((key, value))
    return tuple(parsed)


def resolve_params(request: GenerationRequest, spec: KindSpec, limits: Limits) -> GenerationParams:
    prompt = _prompt("prompt", request.prompt, limits.max_prompt_chars, required=True)
    negative = _prompt("negative_prompt", request.negative_prompt, limits.max_prompt_chars, required=False)
    _not_applicable(spec, request)
    if request.seed is not None and not 0 <= request.seed < SEED_LIMIT:
        raise InvalidArgument(f"seed {request.seed} is out of range; it must be between 0 and {SEED_LIMIT - 1}")
    seed = secrets.randbelow(2**31) if request.seed is None else request.seed
    steps = _int_in("steps", request.steps, limits.default_steps, limits.max_steps)
    guidance = limits.default_guidance_scale if request.guidance_scale is None else request.guidance_scale
    if not (math.isfinite(guidance) and 0.0 <= guidance <= MAX_GUIDANCE_SCALE):
        raise InvalidArgument(
            f"guidance_scale {guidance} is out of range; it must be between 0 and {MAX_GUIDANCE_SCALE:g}"
        )
    mime = request.mime_type.split(";", 1)[0].strip().lower() or spec.mime_types[0]
    if mime not in spec.mime_types:
        raise InvalidArgument(
            f"output mime type {mime!r} is not supported for {spec.modality.value}; choose {', '.join(spec.mime_types)}"
        )
    params = GenerationParams(
        prompt=prompt,
        negative_prompt=negative,
        seed=seed,
        steps=steps,
        guidance_scale=float(guidance),
        mime_type=mime,
        options=_options(spec, request.options),
    )
    if spec.uses_size:
        width = _size("width", request.width, limits.default_width, limits.max_width)
        height = _size("height", request.height, limits.default_height, limits.max_height)
        params = replace(params, width=width, height=height)
    if spec.uses_frames:
        frames = _int_in("num_frames", request.num_frames, limits.default_num_frames, limits.max_num_frames)
        fps = _int_in("fps", request.fps, limits.default_fps, MAX_FPS)
        params = replace(params, num_frames=frames, fps=fps)
    if spec.uses_duration:
        seconds = limits.default_duration_s if request.duration_s is None else request.duration_s
        if not (math.isfinite(seconds) and 0.0 < seconds <= limits.max_duration_s):
            raise InvalidArgument(
                f"duration_seconds {seconds:g} is out of range; it must be above 0 "
                f"and at most {limits.max_duration_s:g}"
            )
        params = replace(params, duration_s=float(seconds))
    return params

"""Generation parameters: each kind declares its own, and a request is checked against them.

A kind lists its numeric parameters as :class:`ParamSpec`\\ s (name, integer or not, range,
step, default per profile, and how the pipeline call takes it). Validation, Info, the batching
key and the pipeline call are all driven by that list, so a kind that adds a parameter changes
nothing else. Each problem is an InvalidArgument whose message names the field, the value and
the limit.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import NamedTuple

from modaverse_runtime.errors import InvalidArgument
from modaverse_runtime.media import MediaKind

from .base import GenerationParams, GenerationRequest

MAX_GUIDANCE_SCALE = 50.0
MAX_FPS = 60
SEED_LIMIT = 2**63  # Done.seed is an int64
# Parameters with a field of their own in the generator's GenerateRequest (and the gateway's overrides);
# the others reach the generator through the generic ``params`` map or, as text, ``options``.
FIELD_PARAMS = frozenset({"steps", "guidance_scale", "width", "height", "num_frames", "fps", "duration_seconds"})


class Bounds(NamedTuple):
    default: float | None
    maximum: float


@dataclass(frozen=True)
class ParamSpec:
    """One numeric parameter of a kind, as a deployment applies it (Info reports it; every request is
    checked against it). ``default`` None: the pipeline's own default applies unless the caller gives one
    (model-specific extras such as ``eta``)."""

    name: str
    minimum: float
    maximum: float
    default: float | None = None
    integer: bool = False
    multiple_of: int = 0  # 0: any value
    exclusive_minimum: bool = False  # the minimum itself is refused (a length of 0 s)
    call_arg: str = ""  # the pipeline-call argument it fills; "": its name
    passed: bool = True  # False: the kind uses it itself (video fps: encoding; resizing an input image)
    per_row: bool = False  # may differ between the rows of one pipeline call (not part of the batch key)
    tiny: Bounds | None = None  # default and maximum on the tiny profile, when they differ

    def __post_init__(self) -> None:
        # One pipeline call takes one value per argument: a value that differs per row cannot be one.
        if self.per_row and self.passed:
            raise ValueError(f"parameter {self.name}: a per-row parameter is used by the kind itself (passed=False)")

    @property
    def argument(self) -> str:
        return self.call_arg or self.name

    def for_profile(self, profile: str) -> ParamSpec:
        if profile == "full" or self.tiny is None:
            return replace(self, tiny=None)
        return replace(self, default=self.tiny.default, maximum=self.tiny.maximum, tiny=None)

    def describe_range(self) -> str:
        low = "above" if self.exclusive_minimum else "between"
        high = "and at most" if self.exclusive_minimum else "and"
        return f"{low} {self.minimum:g} {high} {self.maximum:g}"

    def check(self, value: float) -> float:
        """``value`` if it is allowed (an int for integer parameters); InvalidArgument naming the limit if not."""
        shown = f"{value:g}"
        if self.integer and math.isfinite(value) and value != int(value):
            raise InvalidArgument(f"{self.name} {shown} is not a whole number")
        below = value <= self.minimum if self.exclusive_minimum else value < self.minimum
        if not math.isfinite(value) or below or value > self.maximum:
            raise InvalidArgument(f"{self.name} {shown} is out of range; it must be {self.describe_range()}")
        if self.multiple_of and value % self.multiple_of:
            raise InvalidArgument(f"{self.name} {shown} is not a multiple of {self.multiple_of}")
        return int(value) if self.integer else float(value)


def steps(full: Bounds, tiny: Bounds) -> ParamSpec:
    return ParamSpec("steps", 1, full.maximum, full.default, integer=True, call_arg="num_inference_steps", tiny=tiny)


def guidance_scale(default: float) -> ParamSpec:
    return ParamSpec("guidance_scale", 0.0, MAX_GUIDANCE_SCALE, default)


def size(name: str, full: Bounds, tiny: Bounds, *, passed: bool = True) -> ParamSpec:
    """A width or height in pixels: a multiple of 8 (the VAE's downsampling)."""
    return ParamSpec(name, 8, full.maximum, full.default, integer=True, multiple_of=8, passed=passed, tiny=tiny)


def option(name: str, minimum: float, maximum: float, *, integer: bool = False) -> ParamSpec:
    """A model-specific extra: passed to the pipeline call only when the caller gives it."""
    return ParamSpec(name, minimum, maximum, integer=integer)


@dataclass(frozen=True)
class KindSpec:
    """What a generator kind accepts: its modality, output types (default first), parameters and inputs."""

    modality: MediaKind
    mime_types: tuple[str, ...]
    params: tuple[ParamSpec, ...]
    input_image: bool = False  # the kind transforms an input image (the request's ``image``, required)

    def by_name(self) -> dict[str, ParamSpec]:
        return {p.name: p for p in self.params}

    def for_profile(self, profile: str) -> KindSpec:
        return replace(self, params=tuple(p.for_profile(profile) for p in self.params))

    @property
    def options(self) -> tuple[str, ...]:
        """Parameters that may also be sent as text in ``options`` (those without a field of their own)."""
        return tuple(sorted(p.name for p in self.params if p.name not in FIELD_PARAMS))


def _prompt(name: str, text: str, limit: int, required: bool) -> str:
    if required and not text.strip():
        raise InvalidArgument(f"{name} is empty")
    if len(text) > limit:
        raise InvalidArgument(f"{name} is {len(text)} characters, over the limit of {limit}")
    return text


def _options(spec: KindSpec, options: Mapping[str, str]) -> dict[str, float]:
    """``options`` (numbers as text, the older way to send extras), each checked like its parameter."""
    known, accepted = spec.by_name(), spec.options
    parsed: dict[str, float] = {}
    for key in sorted(options):
        param = known.get(key)
        if param is None or key not in accepted:
            raise InvalidArgument(f"unknown option {key!r}; accepted options: {', '.join(accepted) or 'none'}")
        raw = options[key].strip()
        try:
            value = float(int(raw)) if param.integer else float(raw)
        except ValueError:
            kind = "an integer" if param.integer else "a number"
            raise InvalidArgument(f"option {key}={raw!r} is not {kind}") from None
        if not (math.isfinite(value) and param.minimum <= value <= param.maximum):
            raise InvalidArgument(f"option {key}={raw} is out of range [{param.minimum:g}, {param.maximum:g}]")
        parsed[key] = value
    return parsed


def _values(spec: KindSpec, request: GenerationRequest, kind: str) -> dict[str, float]:
    known = spec.by_name()
    given = dict(request.params)
    for name in given:
        if name not in known:
            accepted = ", ".join(sorted(known))
            raise InvalidArgument(
                f"{name} does not apply to {spec.modality.value} generation by {kind}; its parameters: {accepted}"
            )
    for name, value in _options(spec, request.options).items():
        if name in given:
            raise InvalidArgument(f"{name} is given twice (in params and in options); send it once")
        given[name] = value
    values: dict[str, float] = {}
    for param in spec.params:
        chosen = given.get(param.name, param.default)
        if chosen is not None:
            values[param.name] = param.check(chosen)
    return values


def resolve_params(
    request: GenerationRequest, spec: KindSpec, max_prompt_chars: int, kind: str = "this generator"
) -> GenerationParams:
    """``request`` checked against ``spec`` (a deployment's: parameters for its profile), every default filled in.
    Whether an input image is there is checked here; decoding it is the caller's (it is slow)."""
    prompt = _prompt("prompt", request.prompt, max_prompt_chars, required=True)
    negative = _prompt("negative_prompt", request.negative_prompt, max_prompt_chars, required=False)
    if request.seed is not None and not 0 <= request.seed < SEED_LIMIT:
        raise InvalidArgument(f"seed {request.seed} is out of range; it must be between 0 and {SEED_LIMIT - 1}")
    seed = secrets.randbelow(2**31) if request.seed is None else request.seed
    mime = request.mime_type.split(";", 1)[0].strip().lower() or spec.mime_types[0]
    if mime not in spec.mime_types:
        raise InvalidArgument(
            f"output mime type {mime!r} is not supported for {spec.modality.value}; choose {', '.join(spec.mime_types)}"
        )
    values = _values(spec, request, kind)
    if spec.input_image and request.image is None:
        raise InvalidArgument(f"image is missing: {kind} transforms an input image; send one in 'image'")
    if request.image is not None and not spec.input_image:
        raise InvalidArgument(f"image does not apply to {kind}: it generates from the prompt alone")
    per_row = frozenset(p.name for p in spec.params if p.per_row)
    return GenerationParams(
        prompt=prompt,
        negative_prompt=negative,
        seed=seed,
        mime_type=mime,
        values=values,
        batched=tuple(sorted((name, v) for name, v in values.items() if name not in per_row)),
    )

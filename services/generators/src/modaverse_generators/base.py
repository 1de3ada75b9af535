"""The Generator role: a prompt in, one encoded image / video / audio file out, with progress."""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Hashable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modaverse_runtime.media import MediaKind
from modaverse_runtime.models import ModelBase
from modaverse_runtime.registry import Registry

from .settings import GeneratorSettings

if TYPE_CHECKING:  # params.py builds on these types
    from PIL.Image import Image as PILImage

    from .params import ParamSpec


@dataclass(frozen=True)
class InputImage:
    """An input image as the caller sent it: encoded bytes, and their MIME type if known."""

    data: bytes
    mime_type: str = ""


@dataclass(frozen=True)
class GenerationRequest:
    """What the caller asked for; a parameter left out takes the deployment's default."""

    prompt: str
    negative_prompt: str = ""
    seed: int | None = None
    params: Mapping[str, float] = field(default_factory=dict)  # by the kind's parameter names (steps, width, …)
    options: Mapping[str, str] = field(default_factory=dict)  # the same as text, for parameters without a field
    mime_type: str = ""
    image: InputImage | None = None  # for kinds that transform an image


@dataclass(frozen=True)
class GenerationParams:
    """A validated request with every default filled in."""

    prompt: str
    negative_prompt: str
    seed: int
    mime_type: str
    values: Mapping[str, float]  # every parameter that has a value (integers as int)
    batched: tuple[tuple[str, float], ...] = ()  # the values that must be equal within one pipeline call
    image: PILImage | None = None  # the decoded input image (RGB), for kinds that transform one; per row

    def batch_key(self) -> Hashable:
        """Requests with equal keys can share one pipeline call (prompts, seeds and encodings differ per row)."""
        return self.batched


@dataclass(frozen=True)
class Progress:
    step: int
    total_steps: int


@dataclass(frozen=True)
class GeneratedMedia:
    mime_type: str
    data: bytes
    seed: int
    elapsed_s: float  # from the start of the pipeline call to the encoded file
    queue_s: float  # waiting for the model
    width: int = 0
    height: int = 0
    num_frames: int = 0
    duration_s: float = 0.0


GenerationEvent = Progress | GeneratedMedia


@dataclass(frozen=True)
class GeneratorInfo:
    modality: MediaKind
    kind: str
    model: str
    mime_types: tuple[str, ...]
    params: tuple[ParamSpec, ...]
    options: tuple[str, ...]  # parameters that may also be sent as text in ``options``
    max_prompt_chars: int
    takes_image: bool
    queue_capacity: int
    max_batch_size: int
    profile: str
    device: str


class Generator(ModelBase):
    """Implementations are constructed from settings alone (cheap); ``load`` does the work."""

    role = "generator"

    def __init__(self, settings: GeneratorSettings) -> None:
        super().__init__()
        self.settings = settings

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        """Progress events, then exactly one GeneratedMedia. Raises InvalidArgument for bad requests,
        ResourceExhausted when the queue is full. Closing the iterator cancels the work."""

    @abc.abstractmethod
    def info(self) -> GeneratorInfo: ...


GENERATORS: Registry[Generator] = Registry("generator", Generator)
GENERATORS.register("text-to-image", "modaverse_generators.image:TextToImage")
GENERATORS.register("image-to-image", "modaverse_generators.image_to_image:ImageToImage")
GENERATORS.register("text-to-video", "modaverse_generators.video:TextToVideo")
GENERATORS.register("text-to-audio", "modaverse_generators.audio:TextToAudio")

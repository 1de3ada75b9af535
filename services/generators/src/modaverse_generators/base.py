"""The Generator role: a prompt in, one encoded image / video / audio file out, with progress."""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field

from modaverse_runtime.media import MediaKind
from modaverse_runtime.models import ModelBase
from modaverse_runtime.registry import Registry

from .settings import GeneratorSettings


@dataclass(frozen=True)
class Limits:
    """Defaults and maxima a deployment applies; reported by Info, enforced on every request."""

    default_steps: int
    max_steps: int
    default_guidance_scale: float
    max_prompt_chars: int
    default_width: int = 0  # 0: the parameter does not apply to this kind
    default_height: int = 0
    max_width: int = 0
    max_height: int = 0
    default_num_frames: int = 0
    max_num_frames: int = 0
    default_fps: int = 0
    default_duration_s: float = 0.0
    max_duration_s: float = 0.0


@dataclass(frozen=True)
class GenerationRequest:
    """What the caller asked for; ``None`` means "use the default"."""

    prompt: str
    negative_prompt: str = ""
    seed: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    fps: int | None = None
    duration_s: float | None = None
    mime_type: str = ""
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerationParams:
    """A validated request with every default filled in."""

    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance_scale: float
    mime_type: str
    width: int = 0
    height: int = 0
    num_frames: int = 0
    fps: int = 0
    duration_s: float = 0.0
    options: tuple[tuple[str, float], ...] = ()

    def batch_key(self) -> tuple[object, ...]:
        """Requests with equal keys can share one pipeline call (prompts, seeds and encodings differ per row)."""
        return (
            self.steps,
            self.guidance_scale,
            self.width,
            self.height,
            self.num_frames,
            self.duration_s,
            self.options,
        )


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
    limits: Limits
    options: tuple[str, ...]
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
GENERATORS.register("text-to-video", "modaverse_generators.video:TextToVideo")
GENERATORS.register("text-to-audio", "modaverse_generators.audio:TextToAudio")

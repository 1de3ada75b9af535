"""Typed chat events and results returned by :class:`modaverse.Client`."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "audio/wav": ".wav",
}


@dataclass(frozen=True)
class Invocation:
    index: int
    modality: str  # "image" | "video" | "audio"
    prompt: str
    model: str


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class MetaResponse:
    raw: str
    answer: str
    invocations: list[Invocation]
    parsed: bool


@dataclass(frozen=True)
class InvocationStarted:
    invocation: Invocation
    endpoint: str


@dataclass(frozen=True)
class Progress:
    index: int
    step: int
    total_steps: int


@dataclass(frozen=True)
class MediaChunk:
    index: int
    mime_type: str
    data: bytes
    offset: int
    total_bytes: int


@dataclass(frozen=True)
class InvocationDone:
    index: int
    seed: int
    elapsed_seconds: float
    mime_type: str


@dataclass(frozen=True)
class InvocationError:
    index: int
    code: str
    message: str


@dataclass(frozen=True)
class Done:
    prompt_tokens: int
    completion_tokens: int
    elapsed_seconds: float
    failed_invocations: int


ChatEvent = (
    TextDelta | MetaResponse | InvocationStarted | Progress | MediaChunk | InvocationDone | InvocationError | Done
)


@dataclass
class GeneratedMedia:
    invocation: Invocation
    mime_type: str
    data: bytes
    seed: int = 0

    def save(self, directory: str | Path, stem: str | None = None) -> Path:
        """Write the file into ``directory`` (created if needed); returns its path."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        ext = _EXTENSIONS.get(self.mime_type) or mimetypes.guess_extension(self.mime_type) or ".bin"
        path = folder / f"{stem or f'{self.invocation.index}_{self.invocation.modality}'}{ext}"
        path.write_bytes(self.data)
        return path


@dataclass
class ChatResult:
    """A whole answer: the text, the meta-response, every generated file and every failure."""

    text: str = ""
    meta_response: MetaResponse | None = None
    media: list[GeneratedMedia] = field(default_factory=list)
    errors: list[InvocationError] = field(default_factory=list)
    done: Done | None = None

    def save(self, directory: str | Path) -> list[Path]:
        return [m.save(directory) for m in self.media]


@dataclass(frozen=True, eq=False)
class Embeddings:
    """ImageBind vectors from ``embed``: one float32 row of ``dim`` per item, in the order given, per kind.

    A kind given no items has shape ``(0, dim)``. Each row is exactly the model's output for its modality:
    unit length for images; texts, audio and (at most unit) videos carry ImageBind's own scales, so compare
    directions, e.g. with :meth:`cosine`. Arrays compare by identity (``eq=False``): use NumPy to compare values.
    """

    texts: np.ndarray[Any, np.dtype[np.float32]]
    images: np.ndarray[Any, np.dtype[np.float32]]
    audio: np.ndarray[Any, np.dtype[np.float32]]
    video: np.ndarray[Any, np.dtype[np.float32]]
    encoder_id: str  # the encoder's identity (weights, dtype, transforms): equal ids, comparable vectors
    encoder_model: str  # e.g. "imagebind_huge"

    @property
    def dim(self) -> int:
        """The width of every row (ImageBind's output size: 1024 for huge)."""
        return int(self.texts.shape[1])

    @staticmethod
    def cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Cosine similarities of the rows of ``a`` (n, dim) with the rows of ``b`` (m, dim): an (n, m) array.
        One-dimensional inputs count as one row each. A zero row has similarity 0 with everything."""
        x, y = np.atleast_2d(np.asarray(a, np.float32)), np.atleast_2d(np.asarray(b, np.float32))
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.finfo(np.float32).tiny)
        y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), np.finfo(np.float32).tiny)
        similarities: np.ndarray[Any, np.dtype[np.float32]] = (x @ y.T).astype(np.float32)
        return similarities

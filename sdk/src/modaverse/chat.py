"""Building chat and generate requests and turning gateway events into typed ones (shared by both clients)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.gateway.v1 import gateway_pb2

from .encoder import MEDIA_MODALITIES, MODALITY_NAMES, media_from_file
from .types import (
    ChatEvent,
    ChatResult,
    Done,
    GeneratedMedia,
    Invocation,
    InvocationDone,
    InvocationError,
    InvocationStarted,
    MediaChunk,
    MetaResponse,
    Progress,
    TextDelta,
)

MediaInput = str | Path | bytes | common_pb2.Media


@dataclass
class Turn:
    """One earlier turn of the conversation (for ``history=``)."""

    role: str  # "user" | "assistant"
    text: str = ""
    images: Sequence[MediaInput] = ()
    audio: Sequence[MediaInput] = ()
    video: Sequence[MediaInput] = ()


@dataclass
class GenerationOptions:
    """Per-modality generator settings (``generators={"image": GenerationOptions(steps=4)}``).

    ``params``: any parameter of the generator by name (``{"strength": 0.6}``; ``list_models`` routes, the
    generator's Info lists them), for parameters without a field here; the generator checks them."""

    model: str = ""
    seed: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    fps: int | None = None
    duration_seconds: float | None = None
    negative_prompt: str = ""
    params: Mapping[str, float] = field(default_factory=dict)


def media_item(item: MediaInput, modality: str) -> common_pb2.Media:
    """A Media message from a path (modality and MIME type from the extension), bytes (the server sniffs the
    type) or a Media message (as it is)."""
    if isinstance(item, common_pb2.Media):
        return item
    if isinstance(item, bytes):
        return common_pb2.Media(modality=MEDIA_MODALITIES[modality], data=item)
    return media_from_file(item, modality)


def _turn(
    role: str, text: str, images: Iterable[MediaInput], audio: Iterable[MediaInput], video: Iterable[MediaInput]
) -> gateway_pb2.Turn:
    roles = {"user": gateway_pb2.ROLE_USER, "assistant": gateway_pb2.ROLE_ASSISTANT}
    if role not in roles:
        raise ValueError(f"role must be 'user' or 'assistant', not {role!r}")
    media = [
        *(media_item(m, "image") for m in images),
        *(media_item(m, "audio") for m in audio),
        *(media_item(m, "video") for m in video),
    ]
    return gateway_pb2.Turn(role=roles[role], text=text, media=media)


def build_request(
    text: str,
    *,
    images: Sequence[MediaInput] = (),
    audio: Sequence[MediaInput] = (),
    video: Sequence[MediaInput] = (),
    history: Sequence[Turn] = (),
    meta_response_only: bool = False,
    adapter: str = "",
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    generators: Mapping[str, GenerationOptions] | None = None,
    text_deltas: bool = True,
) -> gateway_pb2.ChatRequest:
    """``text_deltas=False`` asks the gateway for no per-token events (the final result has the answer)."""
    turns = [_turn(t.role, t.text, t.images, t.audio, t.video) for t in history]
    turns.append(_turn("user", text, images, audio, video))
    options = gateway_pb2.ChatOptions(
        meta_response_only=meta_response_only, adapter=adapter, omit_text_deltas=not text_deltas
    )
    for name, value in (("max_tokens", max_tokens), ("temperature", temperature), ("top_p", top_p), ("seed", seed)):
        if value is not None:
            setattr(options, name, value)
    for modality, opts in (generators or {}).items():
        options.generator_overrides[modality].CopyFrom(generator_overrides(opts))
    return gateway_pb2.ChatRequest(turns=turns, options=options)


def generator_overrides(opts: GenerationOptions) -> gateway_pb2.GeneratorOverrides:
    """The wire form of one modality's settings; ``None`` fields stay unset (the generator's defaults)."""
    override = gateway_pb2.GeneratorOverrides(
        model=opts.model, negative_prompt=opts.negative_prompt, params=dict(opts.params)
    )
    for name in ("seed", "steps", "guidance_scale", "width", "height", "num_frames", "fps", "duration_seconds"):
        value = getattr(opts, name)
        if value is not None:
            setattr(override, name, value)
    return override


def build_generate_request(
    modality: str, prompt: str, options: GenerationOptions | None = None, image: MediaInput | None = None
) -> gateway_pb2.GenerateRequest:
    """A direct generation: ``modality`` is "image", "video" or "audio" (ValueError otherwise); ``image`` is the
    input image of a generator that transforms one (image-to-image), as a path, bytes or a Media message."""
    if modality not in MEDIA_MODALITIES:
        raise ValueError(f"modality must be 'image', 'video' or 'audio', not {modality!r}")
    request = gateway_pb2.GenerateRequest(
        modality=MEDIA_MODALITIES[modality], prompt=prompt, options=generator_overrides(options or GenerationOptions())
    )
    if image is not None:
        request.image.CopyFrom(media_item(image, "image"))
    return request


def _invocation(inv: gateway_pb2.Invocation) -> Invocation:
    return Invocation(inv.index, MODALITY_NAMES.get(inv.modality, "?"), inv.prompt, inv.model)


def to_event(event: gateway_pb2.ChatEvent) -> ChatEvent | None:
    kind = event.WhichOneof("event")
    if kind == "text_delta":
        return TextDelta(event.text_delta.text)
    if kind == "meta_response":
        m = event.meta_response
        return MetaResponse(m.raw, m.answer, [_invocation(i) for i in m.invocations], m.parsed)
    if kind == "invocation_started":
        return InvocationStarted(_invocation(event.invocation_started.invocation), event.invocation_started.endpoint)
    if kind == "progress":
        p = event.progress
        return Progress(p.index, p.step, p.total_steps)
    if kind == "media_chunk":
        c = event.media_chunk
        return MediaChunk(c.index, c.mime_type, c.data, c.offset, c.total_bytes)
    if kind == "invocation_done":
        d = event.invocation_done
        return InvocationDone(d.index, d.seed, d.elapsed_seconds, d.mime_type)
    if kind == "invocation_error":
        e = event.invocation_error
        return InvocationError(e.index, e.code, e.message)
    if kind == "done":
        f = event.done
        return Done(f.usage.prompt_tokens, f.usage.completion_tokens, f.elapsed_seconds, f.failed_invocations)
    return None


class ResultBuilder:
    """Folds events into a :class:`ChatResult` (media chunks reassembled by offset)."""

    def __init__(self) -> None:
        self.result = ChatResult()
        self._buffers: dict[int, bytearray] = {}
        self._mime: dict[int, str] = {}
        self._invocations: dict[int, Invocation] = {}

    def add(self, event: ChatEvent) -> None:
        r = self.result
        if isinstance(event, MetaResponse):
            r.meta_response = event
            r.text = event.answer
            self._invocations = {i.index: i for i in event.invocations}
        elif isinstance(event, InvocationStarted):
            self._invocations.setdefault(event.invocation.index, event.invocation)  # a Generate has no MetaResponse
        elif isinstance(event, MediaChunk):
            buffer = self._buffers.setdefault(event.index, bytearray())
            buffer[event.offset : event.offset + len(event.data)] = event.data
            self._mime[event.index] = event.mime_type
        elif isinstance(event, InvocationDone):
            data = bytes(self._buffers.pop(event.index, b""))
            invocation = self._invocations.get(event.index, Invocation(event.index, "?", "", ""))
            r.media.append(
                GeneratedMedia(invocation, event.mime_type or self._mime.get(event.index, ""), data, event.seed)
            )
        elif isinstance(event, InvocationError):
            r.errors.append(event)
        elif isinstance(event, Done):
            r.done = event

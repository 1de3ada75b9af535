"""OpenAI-shaped bodies and server-sent-event chunks, from the SDK's results and events.

Standard fields stay valid for OpenAI clients; everything ModaVerse adds is in extension fields
(documented in docs/web.md): ``message.media``, ``message.meta_response``, ``message.errors`` in a
completion, and a top-level ``modaverse`` object in stream chunks.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from modaverse import (
    ChatEvent,
    ChatResult,
    Done,
    Invocation,
    InvocationDone,
    InvocationError,
    InvocationStarted,
    MediaChunk,
    MetaResponse,
    Progress,
    TextDelta,
)

from .answer_stream import AnswerStream
from .errors import APIError
from .files import FileStore

DONE_LINE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def error_event(error: APIError) -> bytes:
    return sse(error.body())


@dataclass
class MediaKeeper:
    """Stores generated files and describes them (a link, and the bytes inline when asked)."""

    store: FileStore
    base_url: str
    inline: bool = False

    def describe(self, invocation: Invocation, mime_type: str, data: bytes, seed: int) -> dict[str, Any]:
        stored = self.store.put(data, mime_type)
        item: dict[str, Any] = {
            "index": invocation.index,
            "type": invocation.modality,
            "mime_type": mime_type,
            "url": f"{self.base_url}/v1/files/{stored.id}" if stored else None,
            "file_id": stored.id if stored else None,
            "expires_at": int(stored.expires_at) if stored else None,
            "bytes": len(data),
            "prompt": invocation.prompt,
            "model": invocation.model,
            "seed": seed,
        }
        if self.inline or stored is None:
            item["b64_json"] = base64.b64encode(data).decode()
        return item


def invocation_json(inv: Invocation) -> dict[str, Any]:
    return {"index": inv.index, "modality": inv.modality, "prompt": inv.prompt, "model": inv.model}


def meta_json(meta: MetaResponse | None) -> dict[str, Any] | None:
    if meta is None:
        return None
    return {
        "raw": meta.raw,
        "answer": meta.answer,
        "parsed": meta.parsed,
        "invocations": [invocation_json(i) for i in meta.invocations],
    }


def error_json(error: InvocationError, modality: str) -> dict[str, Any]:
    return {"index": error.index, "modality": modality, "code": error.code, "message": error.message}


def usage_json(done: Done | None) -> dict[str, int]:
    prompt, completion = (done.prompt_tokens, done.completion_tokens) if done else (0, 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion(completion_id: str, model: str, result: ChatResult, keeper: MediaKeeper) -> dict[str, Any]:
    """A ``chat.completion`` object for a whole :class:`ChatResult`."""
    modalities = {i.index: i.modality for i in (result.meta_response.invocations if result.meta_response else [])}
    media = [keeper.describe(m.invocation, m.mime_type, m.data, m.seed) for m in result.media]
    message = {
        "role": "assistant",
        "content": result.text,
        "refusal": None,
        "media": media,
        "meta_response": meta_json(result.meta_response),
        "errors": [error_json(e, modalities.get(e.index, "?")) for e in result.errors],
    }
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
        "usage": usage_json(result.done),
        "modaverse": {
            "elapsed_seconds": result.done.elapsed_seconds if result.done else None,
            "failed_invocations": result.done.failed_invocations if result.done else len(result.errors),
        },
    }


@dataclass
class ChatChunks:
    """SDK chat events → ``chat.completion.chunk`` objects, in order."""

    completion_id: str
    model: str
    keeper: MediaKeeper
    include_usage: bool = False
    created: int = field(default_factory=lambda: int(time.time()))
    answer: AnswerStream = field(default_factory=AnswerStream)
    _invocations: dict[int, Invocation] = field(default_factory=dict)
    _buffers: dict[int, bytearray] = field(default_factory=dict)
    _mime: dict[int, str] = field(default_factory=dict)

    def chunk(
        self,
        delta: dict[str, Any] | None = None,
        ext: dict[str, Any] | None = None,
        finish_reason: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason, "logprobs": None}],
        }
        if ext is not None:
            body["modaverse"] = ext
        return body

    def first(self) -> dict[str, Any]:
        return self.chunk({"role": "assistant", "content": ""})

    def on(self, event: ChatEvent) -> list[dict[str, Any]]:
        if isinstance(event, TextDelta):
            text = self.answer.feed(event.text)
            return [self.chunk({"content": text} if text else None, {"type": "raw_delta", "text": event.text})]
        if isinstance(event, MetaResponse):
            rest = self.answer.finish(event.answer)
            self._invocations = {i.index: i for i in event.invocations}
            ext = {"type": "meta_response", **(meta_json(event) or {})}
            return [self.chunk({"content": rest} if rest else None, ext)]
        if isinstance(event, InvocationStarted):
            self._invocations.setdefault(event.invocation.index, event.invocation)
            ext = {"type": "invocation_started", **invocation_json(event.invocation), "endpoint": event.endpoint}
            return [self.chunk(ext=ext)]
        if isinstance(event, Progress):
            ext = {
                "type": "progress",
                "index": event.index,
                "modality": self._modality(event.index),
                "step": event.step,
                "total_steps": event.total_steps,
            }
            return [self.chunk(ext=ext)]
        if isinstance(event, MediaChunk):
            buffer = self._buffers.setdefault(event.index, bytearray())
            buffer[event.offset : event.offset + len(event.data)] = event.data
            self._mime[event.index] = event.mime_type
            return []
        if isinstance(event, InvocationDone):
            data = bytes(self._buffers.pop(event.index, b""))
            invocation = self._invocations.get(event.index, Invocation(event.index, "?", "", ""))
            mime = event.mime_type or self._mime.get(event.index, "application/octet-stream")
            return [
                self.chunk(ext={"type": "media", "media": self.keeper.describe(invocation, mime, data, event.seed)})
            ]
        if isinstance(event, InvocationError):
            return [self.chunk(ext={"type": "invocation_error", **error_json(event, self._modality(event.index))})]
        if isinstance(event, Done):
            ext = {
                "type": "done",
                "usage": usage_json(event),
                "elapsed_seconds": event.elapsed_seconds,
                "failed_invocations": event.failed_invocations,
                "answer_diverged": self.answer.diverged,
            }
            out = [self.chunk(ext=ext, finish_reason="stop")]
            if self.include_usage:
                out.append({**self.chunk(), "choices": [], "usage": usage_json(event)})
            return out
        return []

    def _modality(self, index: int) -> str:
        inv = self._invocations.get(index)
        return inv.modality if inv else "?"


@dataclass
class Generation:
    """One direct generation's events, folded (and described as SSE events when streamed)."""

    model: str
    keeper: MediaKeeper
    b64: bool = False
    created: int = field(default_factory=lambda: int(time.time()))
    invocation: Invocation | None = None
    endpoint: str = ""
    result: dict[str, Any] | None = None
    _buffer: bytearray = field(default_factory=bytearray)
    _mime: str = ""

    def on(self, event: ChatEvent) -> list[dict[str, Any]]:
        if isinstance(event, InvocationStarted):
            self.invocation, self.endpoint = event.invocation, event.endpoint
            return [{"type": "generation.started", "model": self._model(), "endpoint": event.endpoint}]
        if isinstance(event, Progress):
            return [{"type": "generation.progress", "step": event.step, "total_steps": event.total_steps}]
        if isinstance(event, MediaChunk):
            self._buffer[event.offset : event.offset + len(event.data)] = event.data
            self._mime = event.mime_type
            return []
        if isinstance(event, InvocationDone):
            invocation = self.invocation or Invocation(event.index, "?", "", "")
            mime = event.mime_type or self._mime or "application/octet-stream"
            self.keeper.inline = self.b64
            item = self.keeper.describe(invocation, mime, bytes(self._buffer), event.seed)
            item["revised_prompt"] = None
            if self.b64:  # OpenAI's response_format=b64_json: the bytes instead of a link
                item["url"] = None
            self.result = {
                "created": self.created,
                "model": self._model(),
                "data": [item],
                "modaverse": {"elapsed_seconds": event.elapsed_seconds, "endpoint": self.endpoint},
            }
            return []
        if isinstance(event, InvocationError):  # Generate ends with a status instead; kept for safety
            raise APIError(502, f"the generation failed ({event.code}): {event.message}", type="server_error")
        if isinstance(event, Done) and self.result is not None:
            return [{"type": "generation.completed", **self.result}]
        return []

    def _model(self) -> str:
        if self.invocation is not None and self.invocation.model:
            return f"{self.invocation.modality}:{self.invocation.model}"
        return self.model

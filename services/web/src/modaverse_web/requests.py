"""OpenAI request bodies → the SDK's calls, every bad part refused with its place named.

Chat: the last message must be the user's; its text parts become ``text`` and its media parts
``images``/``audio``/``video`` (in order); earlier user and assistant messages become ``history``;
``system``/``developer`` text is put before the first user turn's text (the gateway's conversation
has user and assistant turns only). Assistant messages contribute their text only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modaverse import GenerationOptions, Turn
from modaverse.encoder import MEDIA_MODALITIES
from modaverse_protos.common.v1 import common_pb2

from .errors import APIError, bad_request, unknown_model
from .media import AUDIO_FORMATS, MediaFetcher, b64decode, checked_mime
from .settings import WebSettings

MODALITIES = ("image", "video", "audio")
_MEDIA_PARTS = {"image_url": "image", "video_url": "video", "input_audio": "audio"}
_OPTION_TYPES: dict[str, type] = {
    "model": str,
    "seed": int,
    "steps": int,
    "guidance_scale": float,
    "width": int,
    "height": int,
    "num_frames": int,
    "fps": int,
    "duration_seconds": float,
    "negative_prompt": str,
}


@dataclass
class ChatCall:
    model: str
    text: str
    images: list[common_pb2.Media] = field(default_factory=list)
    audio: list[common_pb2.Media] = field(default_factory=list)
    video: list[common_pb2.Media] = field(default_factory=list)
    history: list[Turn] = field(default_factory=list)
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    generators: dict[str, GenerationOptions] = field(default_factory=dict)
    meta_response_only: bool = False
    adapter: str = ""
    stream: bool = False
    include_usage: bool = False
    inline_media: bool = False

    def sdk_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``AsyncClient.stream``/``chat``."""
        return {
            "images": self.images,
            "audio": self.audio,
            "video": self.video,
            "history": self.history,
            "generators": self.generators or None,
            "meta_response_only": self.meta_response_only,
            "adapter": self.adapter,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
        }


@dataclass
class GenerateCall:
    modality: str
    prompt: str
    options: GenerationOptions
    stream: bool = False
    response_format: str = "url"  # "url" | "b64_json"


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request("expected an object", param, "invalid_type")
    return value


def _string(value: Any, param: str, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise bad_request("expected a string", param, "invalid_type")
    if not allow_empty and not value.strip():
        raise bad_request("must not be empty", param, "invalid_value")
    return value


def _bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise bad_request("expected true or false", param, "invalid_type")
    return value


def _number(value: Any, param: str, lo: float, hi: float, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        raise bad_request(f"expected {'an integer' if integer else 'a number'}", param, "invalid_type")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise bad_request(f"must be between {lo:g} and {hi:g}", param, "invalid_value")
    return value


def _int(value: Any, param: str, lo: int, hi: int) -> int:
    return int(_number(value, param, lo, hi, integer=True))


def _size(value: Any, param: str) -> tuple[int, int]:
    text = _string(value, param)
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit() and all(8 <= int(v) <= 4096 for v in (width, height))):
        raise bad_request("expected 'WIDTHxHEIGHT', each 8 to 4096", param, "invalid_value")
    return int(width), int(height)


def _option(key: str, value: Any, where: str) -> Any:
    kind = _OPTION_TYPES.get(key)
    if kind is None:
        raise bad_request(f"unknown option (known: {', '.join(_OPTION_TYPES)})", where, "unknown_parameter")
    if kind is str:
        return _string(value, where)
    if kind is int:
        return _int(value, where, 0, 2**62)
    return _number(value, where, 0, 1e6)


def generation_options(raw: Any, param: str) -> GenerationOptions:
    """A ``GenerationOptions`` from ``{"model", "steps", "seed", …}`` (unknown keys refused)."""
    values = {
        key: _option(key, value, f"{param}.{key}") for key, value in _object(raw, param).items() if value is not None
    }
    return GenerationOptions(**values)


def _extension(raw: Any, call: ChatCall) -> None:
    ext = _object(raw, "modaverse")
    for key, value in ext.items():
        where = f"modaverse.{key}"
        if key == "generators":
            for modality, options in _object(value, where).items():
                if modality not in MODALITIES:
                    raise bad_request("expected image, video or audio", f"{where}.{modality}", "invalid_value")
                call.generators[modality] = generation_options(options, f"{where}.{modality}")
        elif key == "meta_response_only":
            call.meta_response_only = _bool(value, where)
        elif key == "inline_media":
            call.inline_media = _bool(value, where)
        elif key == "adapter":
            call.adapter = _string(value, where)
        else:
            raise bad_request(
                "unknown extension field (known: generators, inline_media, meta_response_only, adapter)",
                where,
                "unknown_parameter",
            )


class ChatParser:
    """One chat request's body → :class:`ChatCall` (async: a media part may need fetching)."""

    def __init__(self, settings: WebSettings, fetcher: MediaFetcher) -> None:
        self.settings = settings
        self.fetcher = fetcher
        self._parts = 0
        self._media = 0
        self._last_media: dict[str, list[common_pb2.Media]] = {m: [] for m in MODALITIES}  # of the last user turn

    async def parse(self, body: Mapping[str, Any]) -> ChatCall:
        s = self.settings
        model = body.get("model")
        if model is None:
            raise bad_request("required", "model", "missing_required_parameter")
        model = _string(model, "model", allow_empty=False)
        if model != s.chat_model:
            raise unknown_model(model, f"chat completions are served by '{s.chat_model}' (GET /v1/models)")
        call = ChatCall(model=model, text="")
        self._options(body, call)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("expected a non-empty list of messages", "messages", "invalid_value")
        if len(messages) > s.max_messages:
            raise bad_request(f"{len(messages)} messages, the limit is {s.max_messages}", "messages", "too_many")
        system: list[str] = []
        turns: list[Turn] = []
        for i, raw in enumerate(messages):
            where = f"messages[{i}]"
            message = _object(raw, where)
            role = message.get("role")
            if role in ("system", "developer"):
                system.append(self._text_only(message.get("content"), f"{where}.content", role))
            elif role == "assistant":
                content = message.get("content")
                text = "" if content is None else self._text_only(content, f"{where}.content", role)
                if not text.strip():  # a media-only answer: what the LLM wrote, if the client sent it back
                    meta = message.get("meta_response")
                    text = _string(meta.get("raw", ""), f"{where}.meta_response.raw") if isinstance(meta, dict) else ""
                if text.strip():  # the gateway takes no empty turns; an answer with nothing to say is left out
                    turns.append(Turn("assistant", text))
            elif role == "user":
                turns.append(await self._user(message.get("content"), f"{where}.content"))
            else:
                raise bad_request(
                    f"role {role!r} is not supported (use system, developer, user or assistant)",
                    f"{where}.role",
                    "unsupported_role",
                )
        if not turns or turns[-1].role != "user":
            raise bad_request("the last message must be the user's", f"messages[{len(messages) - 1}]", "invalid_value")
        if system:
            first_user = next(t for t in turns if t.role == "user")
            first_user.text = "\n\n".join([*system, first_user.text]).strip()
        last = turns.pop()
        call.text = last.text
        media = self._last_media
        call.images, call.audio, call.video = media["image"], media["audio"], media["video"]
        call.history = turns
        return call

    def _options(self, body: Mapping[str, Any], call: ChatCall) -> None:
        if "n" in body and body["n"] not in (None, 1):
            raise bad_request("only n=1 is supported", "n", "unsupported_value")
        for unsupported in ("tools", "functions", "audio", "prediction"):
            if body.get(unsupported):
                raise bad_request("not supported by this server", unsupported, "unsupported_parameter")
        if body.get("logprobs"):
            raise bad_request("not supported by this server", "logprobs", "unsupported_parameter")
        fmt = body.get("response_format")
        if fmt is not None and _object(fmt, "response_format").get("type") not in ("text", None):
            raise bad_request("only {'type': 'text'} is supported", "response_format", "unsupported_value")
        for key in ("max_completion_tokens", "max_tokens"):
            if body.get(key) is not None:
                call.max_tokens = _int(body[key], key, 1, 2**31)
        if body.get("temperature") is not None:
            call.temperature = _number(body["temperature"], "temperature", 0, 2)
        if body.get("top_p") is not None:
            call.top_p = _number(body["top_p"], "top_p", 0, 1)
        if body.get("seed") is not None:
            call.seed = _int(body["seed"], "seed", 0, 2**63 - 1)
        if body.get("stream") is not None:
            call.stream = _bool(body["stream"], "stream")
        options = body.get("stream_options")
        if options is not None:
            usage = _object(options, "stream_options").get("include_usage", False)
            call.include_usage = _bool(usage, "stream_options.include_usage")
        if body.get("modaverse") is not None:
            _extension(body["modaverse"], call)

    def _count(self, where: str, media: bool) -> None:
        self._parts += 1
        if self._parts > self.settings.max_parts:
            raise bad_request(
                f"too many content parts: the limit is {self.settings.max_parts} per request", where, "too_many_parts"
            )
        if media:
            self._media += 1
            if self._media > self.settings.max_media_items:
                raise bad_request(
                    f"too many media parts: the limit is {self.settings.max_media_items} per request",
                    where,
                    "too_many_parts",
                )

    def _text_only(self, content: Any, where: str, role: str) -> str:
        if isinstance(content, str):
            return content
        if not isinstance(content, list):
            raise bad_request("expected a string or a list of parts", where, "invalid_type")
        texts = []
        for j, raw in enumerate(content):
            part = _object(raw, f"{where}[{j}]")
            self._count(f"{where}[{j}]", media=False)
            kind = part.get("type")
            if kind == "text":
                texts.append(_string(part.get("text"), f"{where}[{j}].text"))
            elif kind != "refusal":
                raise bad_request(f"{role} messages take text parts only", f"{where}[{j}].type", "unsupported_part")
        return "\n".join(texts)

    async def _user(self, content: Any, where: str) -> Turn:
        if isinstance(content, str):
            return Turn("user", content)
        if not isinstance(content, list) or not content:
            raise bad_request("expected a string or a non-empty list of parts", where, "invalid_type")
        texts: list[str] = []
        media: dict[str, list[common_pb2.Media]] = {m: [] for m in MODALITIES}
        for j, raw in enumerate(content):
            param = f"{where}[{j}]"
            part = _object(raw, param)
            kind = part.get("type")
            if kind == "text":
                self._count(param, media=False)
                texts.append(_string(part.get("text"), f"{param}.text"))
            elif kind in _MEDIA_PARTS:
                self._count(param, media=True)
                modality = _MEDIA_PARTS[kind]
                media[modality].append(await self._media_part(kind, part, f"{param}.{kind}", modality))
            else:
                raise bad_request(
                    f"unsupported content part type {kind!r} (use text, image_url, input_audio or video_url)",
                    f"{param}.type",
                    "unsupported_part",
                )
        self._last_media = media
        return Turn("user", "\n".join(texts), images=media["image"], audio=media["audio"], video=media["video"])

    async def _media_part(self, kind: str, part: dict[str, Any], param: str, modality: str) -> common_pb2.Media:
        inner = _object(part.get(kind), param)
        limit = int(self.settings.max_media_mb * 2**20)
        if kind == "input_audio":
            fmt = _string(inner.get("format", ""), f"{param}.format")
            if fmt not in AUDIO_FORMATS:
                raise bad_request(f"expected one of {', '.join(AUDIO_FORMATS)}", f"{param}.format", "invalid_value")
            param = f"{param}.data"
            declared, data = AUDIO_FORMATS[fmt], b64decode(_string(inner.get("data"), param), param, limit)
        else:
            declared, data = await self.fetcher.load(_string(inner.get("url"), f"{param}.url"), f"{param}.url")
            param = f"{param}.url"
        mime = checked_mime(modality, data, declared, param)
        return common_pb2.Media(modality=MEDIA_MODALITIES[modality], mime_type=mime, data=data)


def parse_generation(body: Mapping[str, Any], modality: str, routes: Mapping[str, str]) -> GenerateCall:
    """``POST /v1/{images,videos,audio}/generations`` → :class:`GenerateCall`.

    ``routes``: route name → modality, from the gateway's routing table; ``model`` may be
    ``"<modality>:<route>"``, ``"<route>"``, or absent (the modality's default route).
    """
    prompt = _string(body.get("prompt"), "prompt", allow_empty=False)
    options = GenerationOptions()
    model = body.get("model")
    if model is not None and model != "":
        name = _string(model, "model")
        route = name.split(":", 1)[1] if name.startswith(f"{modality}:") else name
        if route not in ("default", modality) and routes.get(route) != modality:
            known = sorted(f"{modality}:{r}" for r, m in routes.items() if m == modality)
            raise unknown_model(name, f"{modality} models here: {', '.join(known) or 'none'} (GET /v1/models)")
        options.model = "" if route in ("default", modality) else route
    if body.get("n") not in (None, 1):
        raise bad_request("only n=1 is supported", "n", "unsupported_value")
    if body.get("size") is not None:
        options.width, options.height = _size(body["size"], "size")
    for key in ("seed", "steps", "guidance_scale", "width", "height", "num_frames", "fps", "duration_seconds"):
        if body.get(key) is not None:
            setattr(options, key, _option(key, body[key], key))
    if body.get("negative_prompt") is not None:
        options.negative_prompt = _string(body["negative_prompt"], "negative_prompt")
    fmt = body.get("response_format", "url") or "url"
    if fmt not in ("url", "b64_json"):
        raise bad_request("expected 'url' or 'b64_json'", "response_format", "invalid_value")
    stream = _bool(body["stream"], "stream") if body.get("stream") is not None else False
    return GenerateCall(modality, prompt, options, stream, fmt)


def check_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    return body

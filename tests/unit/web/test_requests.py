"""OpenAI request bodies → the SDK's arguments, and every refusal naming the bad part."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from modaverse import GenerationOptions
from modaverse_protos.common.v1 import common_pb2
from modaverse_runtime import samples
from modaverse_web.errors import APIError
from modaverse_web.media import ACCEPTED, MediaFetcher, b64decode, host_allowed, parse_data_url
from modaverse_web.requests import ChatCall, ChatParser, parse_generation
from modaverse_web.settings import WebSettings

PNG = samples.make_image(size=16)
WAV = samples.make_audio(440, 0.1)


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def audio(data: bytes) -> dict[str, Any]:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": "wav"}}


def parser(**overrides: Any) -> ChatParser:
    settings = WebSettings(**overrides)
    files = {"file-known": ("image/png", PNG)}

    async def local_file(file_id: str) -> tuple[str, bytes] | None:
        return files.get(file_id)

    fetcher = MediaFetcher(settings.media_hosts, 1.0, int(settings.max_media_mb * 2**20), local_file)
    return ChatParser(settings, fetcher)


async def parse(body: dict[str, Any], **overrides: Any) -> ChatCall:
    return await parser(**overrides).parse({"model": "modaverse", **body})


async def refusal(body: dict[str, Any], **overrides: Any) -> APIError:
    with pytest.raises(APIError) as info:
        await parse(body, **overrides)
    return info.value


async def test_a_conversation_maps_onto_the_sdk_call() -> None:
    call = await parse(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
                {"role": "user", "content": [{"type": "text", "text": "look"}, image(data_url("image/png", PNG))]},
                {"role": "assistant", "content": "a circle"},
                {"role": "assistant", "content": None},  # dropped: the gateway takes no empty turns
                {"role": "assistant", "content": "", "meta_response": {"raw": "Modality: [IMAGE] Prompt: x"}},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "and"},
                        audio(WAV),
                        {"type": "text", "text": "this?"},
                    ],
                },
            ],
            "max_completion_tokens": 64,
            "temperature": 0.5,
            "top_p": 0.9,
            "seed": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
            "modaverse": {"generators": {"image": {"steps": 4, "model": "sd"}}, "inline_media": True},
            "user": "ignored",
        }
    )  # fmt: skip
    assert call.text == "and\nthis?"
    assert [(a.mime_type, a.modality, a.data) for a in call.audio] == [("audio/wav", common_pb2.MODALITY_AUDIO, WAV)]
    assert call.images == call.video == []
    assert [(t.role, t.text) for t in call.history] == [
        ("user", "Be brief.\n\nNo emoji.\n\nlook"),
        ("assistant", "a circle"),
        ("assistant", "Modality: [IMAGE] Prompt: x"),
    ]
    assert [m.mime_type for m in call.history[0].images] == ["image/png"]  # type: ignore[union-attr]
    assert (call.max_tokens, call.temperature, call.top_p, call.seed) == (64, 0.5, 0.9, 3)
    assert (call.stream, call.include_usage, call.inline_media) == (True, True, True)
    assert call.generators == {"image": GenerationOptions(model="sd", steps=4)}
    kwargs = call.sdk_kwargs()
    assert kwargs["generators"] == call.generators
    assert kwargs["history"] is call.history


async def test_a_link_to_a_kept_file_is_read_from_the_store() -> None:
    call = await parse(
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "/v1/files/file-known"}}]}
            ]
        }
    )
    assert [m.data for m in call.images] == [PNG]
    error = await refusal(
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "/v1/files/file-gone"}}]}
            ]
        }
    )
    assert (error.status, error.code) == (404, "file_not_found")


FIRST = "messages[0].content[0]"


@pytest.mark.parametrize(
    ("content", "param", "status"),
    [
        ([image("data:image/png;base64,@@")], f"{FIRST}.image_url.url", 400),
        ([{"type": "image_url", "image_url": "not an object"}], f"{FIRST}.image_url", 400),
        ([image(data_url("image/png", PNG * 4000))], f"{FIRST}.image_url.url", 413),
        ([{"type": "video_url", "video_url": {"url": data_url("video/mp4", PNG)}}], f"{FIRST}.video_url.url", 400),
        ([{"type": "text", "text": 5}], "messages[0].content[0].text", 400),
        ([{"type": "input_image"}], "messages[0].content[0].type", 400),
        ([], "messages[0].content", 400),
    ],
)  # fmt: skip
async def test_bad_parts_are_named(content: list[Any], param: str, status: int) -> None:
    error = await refusal({"messages": [{"role": "user", "content": content}]}, max_media_mb=0.1)
    assert (error.param, error.status) == (param, status)


async def test_limits_on_parts_and_messages() -> None:
    image = {"type": "image_url", "image_url": {"url": data_url("image/png", PNG)}}
    error = await refusal({"messages": [{"role": "user", "content": [image] * 3}]}, max_media_items=2)
    assert (error.param, error.code) == ("messages[0].content[2]", "too_many_parts")
    text = {"type": "text", "text": "x"}
    history = [{"role": "user", "content": [text, text]}, {"role": "assistant", "content": [text]}]
    error = await refusal({"messages": [*history, {"role": "user", "content": [text]}]}, max_parts=3)
    assert error.param == "messages[2].content[0]"  # counted over the whole conversation
    error = await refusal({"messages": [{"role": "user", "content": "x"}] * 3}, max_messages=2)
    assert error.param == "messages"


async def test_unknown_model_is_404_and_unsupported_options_400() -> None:
    error = await refusal({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    assert (error.status, error.code, error.param) == (404, "model_not_found", "model")
    for body, param in (
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"seed": -1}, "seed"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stream": "yes"}, "stream"),
        ({"modaverse": {"colour": 1}}, "modaverse.colour"),
    ):
        error = await refusal({"messages": [{"role": "user", "content": "x"}], **body})
        assert (error.status, error.param) == (400, param)


def test_generation_requests() -> None:
    routes = {"image-tiny": "image", "sdxl": "image", "audio-tiny": "audio"}
    call = parse_generation(
        {
            "model": "image:sdxl",
            "prompt": "a fox",
            "size": "64x48",
            "steps": 3,
            "seed": 9,
            "response_format": "b64_json",
        },
        "image",
        routes,
    )
    assert call.options == GenerationOptions(model="sdxl", seed=9, steps=3, width=64, height=48)
    assert (call.prompt, call.response_format, call.stream) == ("a fox", "b64_json", False)
    assert parse_generation({"model": "sdxl", "prompt": "x"}, "image", routes).options.model == "sdxl"
    assert parse_generation({"prompt": "x"}, "image", {}).options.model == ""  # the default route
    for body, status, param in (
        ({"model": "image:nope", "prompt": "x"}, 404, "model"),
        ({"model": "audio-tiny", "prompt": "x"}, 404, "model"),
        ({"prompt": ""}, 400, "prompt"),
        ({"prompt": "x", "size": "huge"}, 400, "size"),
        ({"prompt": "x", "steps": 1.5}, 400, "steps"),
        ({"prompt": "x", "n": 2}, 400, "n"),
        ({"prompt": "x", "response_format": "png"}, 400, "response_format"),
    ):
        with pytest.raises(APIError) as info:
            parse_generation(body, "image", routes)
        assert (info.value.status, info.value.param) == (status, param)


def test_media_helpers() -> None:
    # Sniffing itself is the runtime's (tests/unit/runtime/test_media.py); the web tier accepts its types.
    assert ACCEPTED["audio"] == ("audio/wav", "audio/flac", "audio/ogg", "audio/mpeg")
    assert parse_data_url(
        "data:image/x-png;base64," + base64.urlsafe_b64encode(PNG).decode().rstrip("="), "p", 10**6
    ) == ("image/x-png", PNG)
    assert parse_data_url("data:,hello%20world", "p", 100) == ("", b"hello world")
    assert b64decode(" aGVs\nbG8= ", "p", 100) == b"hello"
    with pytest.raises(APIError, match="over the limit"):
        b64decode("A" * 400, "p", 100)
    assert host_allowed("cdn.example.com", [".example.com"])
    assert host_allowed("Example.com.", ["example.com"])
    assert not host_allowed("example.com.evil.org", ["example.com", ".example.com"])

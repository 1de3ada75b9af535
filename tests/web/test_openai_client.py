"""The official ``openai`` package against the web front door, over the real tiny stack.

Plain and streamed completions, media in (image, audio, video parts) and out (links to /v1/files and
inline bytes), multi-turn history, the model list, direct generation, and errors raised as the
client's own exception classes.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from modaverse_runtime import samples

from .stack import Stack

FAST = {"image": {"steps": 2}, "video": {"steps": 2}, "audio": {"steps": 2}}


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0, timeout=120) as client:
        yield client


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def extra(model: Any) -> dict[str, Any]:
    """The extension fields the client keeps on its pydantic models."""
    return dict(model.model_extra or {})


def test_plain_completion(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="modaverse", messages=[{"role": "user", "content": "Modality: [TEXT] Prompt: Hello from the web."}]
    )
    message = completion.choices[0].message
    assert message.role == "assistant"
    assert message.content == "Hello from the web."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.object == "chat.completion"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 10  # what the scripted LLM reports
    fields = extra(message)
    assert fields["media"] == []
    assert fields["meta_response"]["raw"].startswith("Modality: [TEXT] Prompt: Hello from the web.")
    assert fields["meta_response"]["parsed"] is True


def test_streamed_completion_adds_up_to_the_answer(client: openai.OpenAI) -> None:
    # SLOW: the scripted LLM writes 8 characters per 0.2 s, so the answer arrives in several deltas
    text = "SLOW Modality: [TEXT] Prompt: " + "streaming works " * 3
    stream = client.chat.completions.create(
        model="modaverse",
        messages=[{"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(contents) == ("streaming works " * 3).strip()
    assert len(contents) > 1  # it came in pieces, not at the end
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [f.choices[0].finish_reason for f in finals] == ["stop"]
    assert chunks[-1].choices == []  # include_usage: a last chunk with the usage only
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 10
    kinds = [extra(c).get("modaverse", {}).get("type") for c in chunks]
    assert "meta_response" in kinds
    assert kinds.index("meta_response") < kinds.index("done")


def test_image_part_reaches_the_llm(client: openai.OpenAI, stack: Stack) -> None:
    png = samples.make_image("star", "green")
    completion = client.chat.completions.create(
        model="modaverse",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": data_url("image/png", png)}},
                ],
            }
        ],
    )
    # the scripted LLM reports what it received: one image block of projected rows
    assert "messages=1 blocks=2:(1, 256)" in (completion.choices[0].message.content or "")
    request = stack.llm.requests[-1]
    assert [s.WhichOneof("content") for s in request.messages[-1].segments] == ["embeddings", "text"]


def test_audio_and_video_parts_and_history(client: openai.OpenAI, stack: Stack) -> None:
    wav = base64.b64encode(samples.make_audio(300, 0.5)).decode()
    mp4 = samples.make_video(seconds=0.5, size=64)
    completion = client.chat.completions.create(
        model="modaverse",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"},
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
                    {"type": "video_url", "video_url": {"url": data_url("video/mp4", mp4)}},  # type: ignore[misc,list-item]
                    {"type": "text", "text": "and these?"},
                ],
            },
        ],
    )
    assert "messages=3" in (completion.choices[0].message.content or "")
    request = stack.llm.requests[-1]
    assert [m.role for m in request.messages] == [1, 2, 1]
    first = "".join(s.text for s in request.messages[0].segments if s.HasField("text"))
    assert first.startswith("Be brief.")  # the system text leads the first user turn
    blocks = [s.embeddings.modality for s in request.messages[-1].segments if s.HasField("embeddings")]
    assert sorted(blocks) == [3, 4]  # a video block and an audio block


def test_generated_image_is_a_link_and_inline_on_request(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="modaverse",
        messages=[{"role": "user", "content": "Sure.\nModality: [IMAGE] Prompt: a red circle"}],
        extra_body={"modaverse": {"generators": FAST, "inline_media": True}},
    )
    message = completion.choices[0].message
    assert message.content == "Sure."
    (item,) = extra(message)["media"]
    assert (item["type"], item["mime_type"], item["prompt"], item["model"]) == (
        "image",
        "image/png",
        "a red circle",
        "image-tiny",
    )
    linked = httpx.get(item["url"])
    assert linked.status_code == 200
    assert linked.headers["content-type"] == "image/png"
    assert linked.content == base64.b64decode(item["b64_json"])
    assert Image.open(io.BytesIO(linked.content)).format == "PNG"
    invocations = extra(message)["meta_response"]["invocations"]
    assert invocations == [{"index": 0, "modality": "image", "prompt": "a red circle", "model": "image-tiny"}]


def test_streamed_generation_sends_progress_then_media(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="modaverse",
        messages=[{"role": "user", "content": "Modality: [AUDIO] Prompt: a bell"}],
        stream=True,
        extra_body={"modaverse": {"generators": FAST}},
    )
    events = [extra(c).get("modaverse") for c in stream]
    kinds = [e["type"] for e in events if e]
    assert "invocation_error" not in kinds, events
    assert kinds.index("invocation_started") < kinds.index("progress") < kinds.index("media") < kinds.index("done")
    media = next(e for e in events if e and e["type"] == "media")["media"]
    assert (media["type"], media["index"]) == ("audio", 0)
    assert media["mime_type"] == "audio/wav"
    assert "b64_json" not in media  # links only, unless asked
    assert httpx.get(media["url"]).content[:4] == b"RIFF"


def test_a_generated_file_can_be_sent_back_by_its_link(client: openai.OpenAI) -> None:
    drawn = client.chat.completions.create(
        model="modaverse",
        messages=[{"role": "user", "content": "Modality: [IMAGE] Prompt: a blue square"}],
        extra_body={"modaverse": {"generators": FAST}},
    )
    path = "/v1/files/" + extra(drawn.choices[0].message)["media"][0]["file_id"]
    described = client.chat.completions.create(
        model="modaverse",
        messages=[
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": path}}, {"type": "text", "text": "?"}],
            }
        ],
    )
    assert "blocks=2:(1, 256)" in (described.choices[0].message.content or "")


def test_models_list_has_the_chat_model_and_every_route(client: openai.OpenAI) -> None:
    models = {m.id: extra(m).get("modaverse", {}) for m in client.models.list()}
    assert set(models) == {"modaverse", "image:image-tiny", "video:video-tiny", "audio:audio-tiny"}
    assert models["modaverse"]["kind"] == "chat"
    assert models["video:video-tiny"] == {
        "kind": "generator",
        "modality": "video",
        "route": "video-tiny",
        "default": True,
        "healthy": True,
        "endpoint": "/v1/videos/generations",
    }
    assert client.models.retrieve("image:image-tiny").id == "image:image-tiny"


def test_errors_are_the_clients_exceptions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "model_not_found"
    assert "modaverse" in missing.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="modaverse",
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}
            ],
        )
    assert bad.value.param == "messages[0].content[0].image_url.url"
    assert bad.value.code == "invalid_base64"
    with pytest.raises(openai.BadRequestError, match="characters of text"):  # the gateway's own check
        client.chat.completions.create(model="modaverse", messages=[{"role": "user", "content": "x" * 20_000}])


def test_error_in_a_stream_is_raised_by_the_client(client: openai.OpenAI, stack: Stack) -> None:
    # Text the gateway refuses fails before the stream starts: a plain 400, not a 200 stream.
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="modaverse", messages=[{"role": "user", "content": "x" * 20_000}], stream=True
        )
    # A deadline that passes mid-stream arrives as an error event, which the client raises.
    short = stack.start_web(request_timeout_s=1.0)
    with openai.OpenAI(base_url=f"{short.url}/v1", api_key="unused", max_retries=0) as impatient:
        stream = impatient.chat.completions.create(
            model="modaverse",
            messages=[{"role": "user", "content": "SLOW Modality: [TEXT] Prompt: " + "word " * 60}],
            stream=True,
        )
        with pytest.raises(openai.APIError, match="deadline"):
            for _ in stream:
                pass


def test_direct_image_generation(client: openai.OpenAI) -> None:
    result = client.images.generate(model="image:image-tiny", prompt="a green star", extra_body={"steps": 2, "seed": 7})
    assert result.data is not None
    (image,) = result.data
    assert image.url is not None
    assert image.b64_json is None
    assert extra(image)["seed"] == 7
    assert Image.open(io.BytesIO(httpx.get(image.url).content)).format == "PNG"
    inline = client.images.generate(prompt="a green star", response_format="b64_json", extra_body={"steps": 2})
    assert inline.data is not None
    assert Image.open(io.BytesIO(base64.b64decode(inline.data[0].b64_json or ""))).format == "PNG"
    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="image:nope", prompt="x")
    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="audio:audio-tiny", prompt="x")  # a route of another modality


def test_direct_audio_and_video_generation(stack: Stack) -> None:
    audio = httpx.post(f"{stack.url}/v1/audio/generations", json={"prompt": "a bell", "steps": 2}, timeout=120)
    assert audio.status_code == 200, audio.text
    (item,) = audio.json()["data"]
    assert item["mime_type"] == "audio/wav"
    assert httpx.get(item["url"]).content[:4] == b"RIFF"
    body = {"model": "video:video-tiny", "prompt": "a square", "steps": 2, "stream": True}
    with httpx.stream("POST", f"{stack.url}/v1/videos/generations", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    import json

    events = [json.loads(line[6:]) for line in lines[:-1]]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "generation.started"
    assert "generation.progress" in kinds
    assert kinds[-1] == "generation.completed"
    assert events[-1]["data"][0]["mime_type"] == "video/mp4"

"""Bad input and broken backends: each gets OpenAI's error shape with the right status, naming the bad
part, and the service stays healthy and keeps answering afterwards."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from modaverse_runtime import samples
from tests.integration import gateway_fixtures
from tests.integration.in_process import free_port

from .stack import Stack

CHAT = "/v1/chat/completions"


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def chat_body(*parts: dict[str, Any], text: str = "what is this?", **extra: Any) -> dict[str, Any]:
    content = [{"type": "text", "text": text}, *parts]
    return {"model": "modaverse", "messages": [{"role": "user", "content": content}], **extra}


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=120) as client:
        yield client


def assert_still_serving(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").status_code == 200
    reply = http.post(
        CHAT, json={"model": "modaverse", "messages": [{"role": "user", "content": "Modality: [TEXT] Prompt: ok"}]}
    )
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"] == "ok"


IMAGE_URL = "messages[0].content[1].image_url.url"
AUDIO = "messages[0].content[1].input_audio"
WAV_B64 = base64.b64encode(samples.make_audio(440, 0.1)).decode()
BAD_PARTS = [
    (image_part("data:image/png;base64,!!notbase64!!"), IMAGE_URL, "invalid_base64", "base64"),
    (
        {"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}},
        f"{AUDIO}.data",
        "invalid_base64",
        "base64",
    ),
    (image_part(data_url("image/png", b"\x01\x02 not a file")), IMAGE_URL, "invalid_media", "not a recognised image"),
    (image_part(data_url("image/png", samples.make_audio(440, 0.1))), IMAGE_URL, "invalid_media", "got audio/wav"),
    (
        {"type": "video_url", "video_url": {"url": data_url("video/mp4", samples.make_image())}},
        "messages[0].content[1].video_url.url",
        "invalid_media",
        "expected video data, got image/png",
    ),
    (image_part(data_url("image/bmp", b"BM" + bytes(60))), IMAGE_URL, "invalid_media", "image/bmp"),
    (
        {"type": "input_audio", "input_audio": {"data": WAV_B64, "format": "aiff"}},
        f"{AUDIO}.format",
        "invalid_value",
        "wav",
    ),
    (image_part("https://example.com/cat.png"), IMAGE_URL, "url_not_allowed", "MODAVERSE_ALLOWED_MEDIA_HOSTS"),
    (image_part("file:///etc/passwd"), IMAGE_URL, "invalid_url", "data: URL"),
    ({"type": "file", "file": {"file_id": "x"}}, "messages[0].content[1].type", "unsupported_part", "'file'"),
]


@pytest.mark.parametrize(("part", "param", "code", "fragment"), BAD_PARTS)
def test_bad_media_parts_are_400_naming_the_part(
    http: httpx.Client, part: dict[str, Any], param: str, code: str, fragment: str
) -> None:
    error = error_of(http.post(CHAT, json=chat_body(part)), 400)
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")
    assert fragment in error["message"]
    assert error["message"].startswith(param)


def test_media_the_encoder_cannot_decode_is_400_from_the_gateway(http: httpx.Client) -> None:
    png = samples.make_image()
    truncated = png[: len(png) // 3]  # a PNG by its magic bytes, corrupt inside
    error = error_of(http.post(CHAT, json=chat_body(image_part(data_url("image/png", truncated)))), 400)
    assert error["code"] == "invalid_argument"
    assert "encoder" in error["message"]
    assert_still_serving(http)


def _chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "modaverse", "messages": list(messages), **extra}


HI = {"role": "user", "content": "hi"}
BAD_REQUESTS = [
    ({"messages": [HI]}, 400, "model", "required"),
    ({"model": "dall-e-3", "messages": [HI]}, 404, "model", "does not exist"),
    (_chat(), 400, "messages", "non-empty"),
    (_chat({"role": "assistant", "content": "hi"}), 400, "messages[0]", "last message"),
    (_chat(HI, {"role": "tool", "content": "b"}), 400, "messages[1].role", "not supported"),
    (_chat(HI, n=2), 400, "n", "n=1"),
    (_chat(HI, temperature=7), 400, "temperature", "between"),
    (_chat(HI, modaverse={"generators": {"smell": {}}}), 400, "modaverse.generators.smell", "image, video or audio"),
    (_chat(HI, modaverse={"generators": {"image": {"stepz": 3}}}), 400, "modaverse.generators.image.stepz", "unknown"),
]


@pytest.mark.parametrize(("body", "status", "param", "fragment"), BAD_REQUESTS)
def test_bad_requests(http: httpx.Client, body: dict[str, Any], status: int, param: str, fragment: str) -> None:
    error = error_of(http.post(CHAT, json=body), status)
    assert error["param"] == param
    assert fragment in error["message"]


def test_too_many_parts(http: httpx.Client) -> None:
    png = image_part(data_url("image/png", samples.make_image(size=16)))
    error = error_of(http.post(CHAT, json=chat_body(*[png] * 5)), 400)  # this server allows 4 media parts
    assert (error["param"], error["code"]) == ("messages[0].content[5]", "too_many_parts")
    texts = [{"type": "text", "text": str(i)} for i in range(9)]  # and 8 parts in all
    error = error_of(http.post(CHAT, json=chat_body(*texts)), 400)
    assert error["code"] == "too_many_parts"
    assert_still_serving(http)


def test_not_json(http: httpx.Client) -> None:
    error = error_of(http.post(CHAT, content=b"{not json", headers={"content-type": "application/json"}), 400)
    assert error["code"] == "invalid_json"
    error = error_of(http.post(CHAT, json=[1, 2]), 400)
    assert "JSON object" in error["message"]
    error = error_of(http.get("/v1/nothing-here"), 404)
    assert "no such endpoint" in error["message"]


def test_oversize_body_is_413_and_the_server_carries_on(stack: Stack) -> None:
    small = stack.start_web(max_body_mb=1)
    big = chat_body(image_part(data_url("image/png", samples.make_image() + bytes(2 * 2**20))))
    payload = json.dumps(big).encode()
    with httpx.Client(base_url=small.url, timeout=60) as http:
        error = error_of(http.post(CHAT, content=payload, headers={"content-type": "application/json"}), 413)
        assert error["code"] == "request_too_large"

        def chunks() -> Iterator[bytes]:  # no content-length: the limit is counted as the body arrives
            for start in range(0, len(payload), 64 * 1024):
                yield payload[start : start + 64 * 1024]

        error = error_of(http.post(CHAT, content=chunks(), headers={"content-type": "application/json"}), 413)
        assert "over the limit of 1 MB" in error["message"]
        counted = http.get("/metrics").text
        assert 'modaverse_web_requests_total{route="/v1/chat/completions",status="413"}' in counted
        assert_still_serving(http)


def test_oversize_media_item_is_413_naming_it(stack: Stack) -> None:
    strict = stack.start_web(max_media_mb=0.001)  # about 1 KB
    with httpx.Client(base_url=strict.url, timeout=60) as http:
        png = samples.make_image()
        assert len(png) > 0.001 * 2**20
        error = error_of(http.post(CHAT, json=chat_body(image_part(data_url("image/png", png)))), 413)
        assert error["param"] == "messages[0].content[1].image_url.url"


def test_gateway_down_is_503_and_the_page_stays_up(stack: Stack) -> None:
    orphan = stack.start_web(gateway=f"127.0.0.1:{free_port()}")
    with httpx.Client(base_url=orphan.url, timeout=60) as http:
        for call in (
            lambda: http.post(CHAT, json=chat_body()),
            lambda: http.post(CHAT, json=chat_body(stream=True)),  # refused before any event: not a 200 stream
            lambda: http.get("/v1/models"),
            lambda: http.post("/v1/images/generations", json={"prompt": "a cat"}),
        ):
            response = call()
            error = error_of(response, 503)
            assert error["code"] == "service_unavailable"
            assert response.headers["retry-after"] == "1"
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200  # the page and the API stay up and say what is wrong
        page = http.get("/")
        assert page.status_code == 200
        assert "ModaVerse" in page.text


def test_a_dead_generator(stack: Stack) -> None:
    gateway = stack.loop.run(
        gateway_fixtures.start_gateway(
            stack.encoder.target,
            f"127.0.0.1:{stack.llm_server.port}",
            {"image": f"127.0.0.1:{free_port()}"},
            retry_attempts=1,
        )
    )
    try:
        web = stack.start_web(gateway=f"127.0.0.1:{gateway.port}")
        with httpx.Client(base_url=web.url, timeout=60) as http:
            # direct generation: the call fails with 503
            error = error_of(http.post("/v1/images/generations", json={"prompt": "a cat", "steps": 2}), 503)
            assert error["type"] == "server_error"
            # in a chat, only the invocation fails: the answer arrives with the failure listed
            reply = http.post(CHAT, json=chat_body(text="Here.\nModality: [IMAGE] Prompt: a cat"))
            assert reply.status_code == 200
            message = reply.json()["choices"][0]["message"]
            assert message["content"] == "Here."
            assert message["media"] == []
            (failure,) = message["errors"]
            assert (failure["index"], failure["modality"], failure["code"]) == (0, "image", "UNAVAILABLE")
    finally:
        stack.loop.run(gateway.stop(0))


def test_deadline_is_504(stack: Stack) -> None:
    impatient = stack.start_web(request_timeout_s=0.5)
    with httpx.Client(base_url=impatient.url, timeout=60) as http:
        body = {
            "model": "modaverse",
            "messages": [{"role": "user", "content": "SLOW Modality: [TEXT] Prompt: " + "word " * 40}],
        }
        error = error_of(http.post(CHAT, json=body), 504)
        assert error["code"] == "timeout"


def test_remote_media_from_an_allowed_host(stack: Stack, http: httpx.Client) -> None:
    drawn = http.post("/v1/images/generations", json={"prompt": "a red circle", "steps": 2}).json()
    url = drawn["data"][0]["url"]
    assert url.startswith("http://127.0.0.1:")
    fetching = stack.start_web(allowed_media_hosts="127.0.0.1")
    with httpx.Client(base_url=fetching.url, timeout=60) as other:
        reply = other.post(CHAT, json=chat_body(image_part(url)))
        assert reply.status_code == 200, reply.text
        assert "blocks=2:(1, 256)" in reply.json()["choices"][0]["message"]["content"]
        gone = url.rsplit("/", 1)[0] + "/file-doesnotexist"
        error = error_of(other.post(CHAT, json=chat_body(image_part(gone))), 400)
        assert "HTTP 404" in error["message"]
    error = error_of(http.post(CHAT, json=chat_body(image_part(url))), 400)  # not allowed on the main server
    assert error["code"] == "url_not_allowed"


def test_files_serve_ranges_and_expire_unknown_ids(http: httpx.Client) -> None:
    drawn = http.post("/v1/images/generations", json={"prompt": "a red circle", "steps": 2}).json()
    url = drawn["data"][0]["url"]
    whole = http.get(url)
    part = http.get(url, headers={"range": "bytes=0-7"})
    assert part.status_code == 206
    assert part.content == whole.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert part.headers["content-range"] == f"bytes 0-7/{len(whole.content)}"
    assert http.get(url, headers={"range": "bytes=999999999-"}).status_code == 416
    error = error_of(http.get("/v1/files/file-nope"), 404)
    assert error["code"] == "not_found"


def test_metrics_count_requests_by_route_and_status(http: httpx.Client) -> None:
    http.post(CHAT, json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]})
    text = http.get("/metrics").text
    assert 'modaverse_web_requests_total{route="/v1/chat/completions",status="404"}' in text
    assert "modaverse_web_requests_in_flight" in text
    assert "modaverse_web_file_bytes" in text

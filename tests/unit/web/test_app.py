"""The HTTP layer with a stand-in for the gateway: the SDK's exceptions become OpenAI errors with the right
status, a client that goes away cancels the gateway call, files expire, and the probes report draining."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client import REGISTRY

from modaverse import ChatEvent, ChatResult, ModelRoute
from modaverse.errors import (
    DeadlineExceeded,
    InvalidArgument,
    ModaverseError,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from modaverse_web.app import create_app
from modaverse_web.files import FileStore
from modaverse_web.gateway import MAX_CLIENTS, Gateway
from modaverse_web.settings import WebSettings

CHAT = {"model": "modaverse", "messages": [{"role": "user", "content": "hi"}]}


class FakeClient:
    def __init__(self, error: ModaverseError | None = None, hang: bool = False) -> None:
        self.error = error
        self.hang = hang
        self.cancelled = 0
        self.started = asyncio.Event()

    async def chat(self, text: str, **kwargs: Any) -> ChatResult:
        self.started.set()
        if text == "crash":
            raise RuntimeError("a bug")
        if self.hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if self.error:
            raise self.error
        return ChatResult(text=f"echo: {text}")

    async def stream(self, text: str, **kwargs: Any) -> AsyncGenerator[ChatEvent, None]:
        if self.error:
            raise self.error
        yield  # type: ignore[misc]

    async def generate_stream(self, modality: str, prompt: str, **kwargs: Any) -> AsyncGenerator[ChatEvent, None]:
        if self.error:
            raise self.error
        yield  # type: ignore[misc]


class FakeGateway(Gateway):
    def __init__(self, settings: WebSettings, client: FakeClient) -> None:
        super().__init__(settings)
        self.fake = client

    def client(self, caller_token: str | None = None) -> Any:
        return self.fake

    async def routes(self, caller_token: str | None = None) -> list[ModelRoute]:
        if self.fake.error:
            raise self.fake.error
        return [ModelRoute("image", "image-tiny", ["x:1"], True, True)]


def app_with(client: FakeClient, **overrides: Any) -> Any:
    settings = WebSettings(**overrides)
    return create_app(settings, FakeGateway(settings, client))


async def call(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://web") as http:
        return await http.request(method, path, **kwargs)


def error(code: grpc.StatusCode, cls: type[ModaverseError] = ModaverseError) -> ModaverseError:
    return cls(code, "details from the gateway")


@pytest.mark.parametrize(
    ("exc", "status", "kind", "code"),
    [
        (error(grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument), 400, "invalid_request_error", "invalid_argument"),
        (error(grpc.StatusCode.UNAUTHENTICATED, Unauthenticated), 401, "authentication_error", "invalid_api_key"),
        (error(grpc.StatusCode.NOT_FOUND, NotFound), 404, "not_found_error", "not_found"),
        (error(grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted), 429, "rate_limit_error", "rate_limit_exceeded"),
        (error(grpc.StatusCode.UNAVAILABLE, Unavailable), 503, "server_error", "service_unavailable"),
        (error(grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded), 504, "server_error", "timeout"),
        (error(grpc.StatusCode.UNIMPLEMENTED), 501, "server_error", "not_implemented"),
        (error(grpc.StatusCode.INTERNAL), 502, "server_error", "upstream_error"),
    ],
)
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/chat/completions", CHAT),
        ("POST", "/v1/chat/completions", {**CHAT, "stream": True}),  # refused before the stream starts
        ("POST", "/v1/videos/generations", {"prompt": "x"}),
        ("GET", "/v1/models", None),
    ],
)
async def test_sdk_errors_map_to_http(
    exc: ModaverseError, status: int, kind: str, code: str, method: str, path: str, body: Any
) -> None:
    reply = await call(app_with(FakeClient(exc)), method, path, json=body)
    assert reply.status_code == status
    assert reply.json()["error"]["type"] == kind
    assert reply.json()["error"]["code"] == code
    assert "details from the gateway" in reply.json()["error"]["message"]


async def test_a_client_that_goes_away_cancels_the_gateway_call() -> None:
    client = FakeClient(hang=True)
    app = app_with(client)
    route = {"route": "/v1/chat/completions"}
    before = REGISTRY.get_sample_value("modaverse_web_cancelled_total", route) or 0
    body = json.dumps(CHAT).encode()
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await gone.wait()
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("web", 80),
    }
    task = asyncio.create_task(app(scope, receive, send))
    await asyncio.wait_for(client.started.wait(), 5)  # the call reached the (hanging) gateway
    assert client.cancelled == 0
    gone.set()
    await asyncio.wait_for(task, 5)
    assert client.cancelled == 1
    assert REGISTRY.get_sample_value("modaverse_web_cancelled_total", route) == before + 1
    assert sent[0]["status"] == 499


async def test_probes_and_draining() -> None:
    app = app_with(FakeClient())
    assert (await call(app, "GET", "/healthz")).json() == {"status": "ok"}
    assert (await call(app, "GET", "/readyz")).status_code == 200
    app.state.web.draining = True
    reply = await call(app, "GET", "/readyz")
    assert (reply.status_code, reply.json()) == (503, {"status": "draining"})
    assert (await call(app, "GET", "/healthz")).status_code == 200
    page = await call(app, "GET", "/")
    assert "content-security-policy" in page.headers
    assert (await call(app, "GET", "/static/app.js")).status_code == 200
    assert (await call(app_with(FakeClient(), playground=False), "GET", "/")).status_code == 404


async def test_plain_chat_with_the_stand_in() -> None:
    reply = await call(app_with(FakeClient()), "POST", "/v1/chat/completions", json=CHAT)
    body = reply.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "echo: hi"
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def test_file_store_expires_and_keeps_within_its_size() -> None:
    now = [1000.0]
    store = FileStore(max_bytes=100, ttl_s=10, clock=lambda: now[0])
    first = store.put(b"a" * 40, "image/png")
    second = store.put(b"b" * 40, "image/png")
    assert first is not None
    assert second is not None
    third = store.put(b"c" * 40, "audio/wav")  # over 100 bytes: the oldest goes
    assert third is not None
    assert store.get(first.id) is None
    assert store.get(second.id) is not None
    assert store.total_bytes == 80
    assert store.put(b"x" * 101, "image/png") is None  # larger than the whole store: not kept
    now[0] += 10
    assert store.get(second.id) is None
    assert store.get(third.id) is None
    assert (len(store), store.total_bytes) == (0, 0)
    assert third.filename.endswith(".wav")


async def test_an_unexpected_failure_is_a_500_in_the_same_shape() -> None:
    body = {"model": "modaverse", "messages": [{"role": "user", "content": "crash"}]}
    reply = await call(app_with(FakeClient()), "POST", "/v1/chat/completions", json=body)
    assert reply.status_code == 500
    assert reply.json() == {
        "error": {"message": "internal error", "type": "server_error", "param": None, "code": "internal_error"}
    }


async def test_forwarded_tokens_get_a_bounded_set_of_clients() -> None:
    gateway = Gateway(WebSettings(gateway_tls=True))
    first = gateway.client("token-0")
    assert gateway.client("token-0") is first
    others = [gateway.client(f"token-{i}") for i in range(1, MAX_CLIENTS + 1)]
    assert len(gateway._clients) == MAX_CLIENTS
    assert gateway.client("token-0") is not first  # the least recently used was let go
    assert gateway.client(f"token-{MAX_CLIENTS}") is others[-1]
    no_tls = Gateway(WebSettings())
    assert no_tls.client("secret") is no_tls.client(None)  # never a token over plain text
    await gateway.close()
    await no_tls.close()

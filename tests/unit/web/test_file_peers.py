"""Replicas of the web service find each other's generated files (MODAVERSE_FILE_PEERS): real uvicorn
servers on loopback ports, each with its own file store. A link made by one replica works through another
(whole, by range, and as a chat's media link), a peer's question is answered from its own store only, a
peer that is down does not hide one that answers, and ids that are unknown or malformed get a 404."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from modaverse import ChatResult
from modaverse_web.app import WebState, create_app
from modaverse_web.peers import PEER_HEADER
from modaverse_web.server import WebServer, bind, uvicorn_config
from modaverse_web.settings import WebSettings

from .test_app import FakeClient, FakeGateway

PNG = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(3000)


class RecordingClient(FakeClient):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[bytes] = []

    async def chat(self, text: str, **kwargs: Any) -> ChatResult:
        self.images += [item.data for item in kwargs.get("images") or []]  # Media protos
        return ChatResult(text="seen")


@dataclass
class Replica:
    server: WebServer
    task: asyncio.Future[None]
    url: str
    client: RecordingClient

    @property
    def state(self) -> WebState:
        return self.server.state


def free_port() -> int:
    with contextlib.closing(bind("127.0.0.1", 0)) as sock:
        port: int = sock.getsockname()[1]
        return port  # nothing listens there once it is closed


@contextlib.asynccontextmanager
async def replicas(count: int, extra_peers: tuple[str, ...] = ()) -> AsyncIterator[list[Replica]]:
    socks = [bind("127.0.0.1", 0) for _ in range(count)]
    peers = ",".join([*(f"127.0.0.1:{s.getsockname()[1]}" for s in socks), *extra_peers])  # each lists itself too
    running = []
    for sock in socks:
        settings = WebSettings(host="127.0.0.1", port=0, file_peers=peers, file_peers_timeout_s=5)
        client = RecordingClient()
        app = create_app(settings, FakeGateway(settings, client))
        server = WebServer(uvicorn_config(app, settings), app.state.web)
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started:
            assert not task.done(), task.result()
            await asyncio.sleep(0.01)
        running.append(Replica(server, task, f"http://127.0.0.1:{sock.getsockname()[1]}", client))
    try:
        yield running
    finally:
        for replica in running:
            replica.server.should_exit = True
        await asyncio.gather(*(r.task for r in running))


def lookups(result: str) -> float:
    return REGISTRY.get_sample_value("modaverse_web_peer_file_lookups_total", {"result": result}) or 0.0


async def test_a_file_made_on_one_replica_is_served_by_another() -> None:
    async with replicas(2) as (a, b), httpx.AsyncClient() as http:
        made = a.state.store.put(PNG, "image/png")
        assert made is not None and b.state.store.get(made.id) is None
        found = lookups("found")
        reply = await http.get(f"{b.url}/v1/files/{made.id}")
        assert reply.status_code == 200 and reply.content == PNG
        assert reply.headers["content-type"] == "image/png"
        assert made.id in reply.headers["content-disposition"]
        assert lookups("found") == found + 1
        kept = b.state.store.get(made.id)  # kept here from now on, no longer than there
        assert kept is not None and kept.data == PNG and kept.expires_at <= made.expires_at + 1
        part = await http.get(f"{b.url}/v1/files/{made.id}", headers={"range": "bytes=8-15"})
        assert part.status_code == 206 and part.content == PNG[8:16]
        assert lookups("found") == found + 1  # served from B's own store


async def test_a_peers_question_is_answered_from_its_own_store_only() -> None:
    async with replicas(2) as (a, b), httpx.AsyncClient() as http:
        made = a.state.store.put(PNG, "image/png")
        assert made is not None
        asked = await http.get(f"{b.url}/v1/files/{made.id}", headers={PEER_HEADER: "1"})
        assert asked.status_code == 404  # B does not have it and does not ask A on a peer's behalf
        assert b.state.store.get(made.id) is None


async def test_unknown_and_malformed_ids_are_not_found() -> None:
    async with replicas(2) as (a, _), httpx.AsyncClient() as http:
        before, known = lookups("not_found"), lookups("known_missing")
        made_up = f"{a.url}/v1/files/file-{secrets.token_urlsafe(16)}"
        unknown = await http.get(made_up)
        assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
        assert lookups("not_found") == before + 1  # both replicas were asked
        again = await http.get(made_up)  # asked again at once: the peers are not asked again
        assert again.status_code == 404
        assert lookups("not_found") == before + 1 and lookups("known_missing") == known + 1
        malformed = await http.get(f"{a.url}/v1/files/file-short")
        assert malformed.status_code == 404
        assert lookups("not_found") == before + 1  # not worth asking anyone


async def test_a_peer_that_is_down_does_not_hide_one_that_answers() -> None:
    async with replicas(2, extra_peers=(f"127.0.0.1:{free_port()}",)) as (a, b), httpx.AsyncClient() as http:
        made = a.state.store.put(PNG, "image/png")
        assert made is not None
        reply = await http.get(f"{b.url}/v1/files/{made.id}")
        assert reply.status_code == 200 and reply.content == PNG
        gone = await http.get(f"{b.url}/v1/files/file-{secrets.token_urlsafe(16)}")
        assert gone.status_code == 404


async def test_a_chat_can_ask_about_a_file_another_replica_made() -> None:
    async with replicas(2) as (a, b), httpx.AsyncClient() as http:
        made = a.state.store.put(PNG, "image/png")
        assert made is not None
        content = [
            {"type": "text", "text": "what is in this picture?"},
            {"type": "image_url", "image_url": {"url": f"/v1/files/{made.id}"}},
        ]
        body = {"model": "modaverse", "messages": [{"role": "user", "content": content}]}
        reply = await http.post(f"{b.url}/v1/chat/completions", json=body)
        assert reply.status_code == 200, reply.text
        assert b.client.images == [PNG] and a.client.images == []


def test_peers_must_be_host_port_and_plain_http(tmp_path: Any) -> None:
    assert WebSettings(file_peers=" web-peers:8080 , [::1]:81 ").peers == [("web-peers", 8080), ("::1", 81)]
    for bad in ("web-peers", "web-peers:http", ":8080", "web-peers:70000"):
        with pytest.raises(ValidationError, match="is not host:port"):
            WebSettings(file_peers=bad)
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("x")
    key.write_text("x")
    with pytest.raises(ValidationError, match="plain HTTP"):
        WebSettings(file_peers="web-peers:8080", tls_cert_file=cert, tls_key_file=key)

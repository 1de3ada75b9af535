"""The server-sent event stream on the ASGI wire: keep-alive comments only while idle and never inside
or after an event, one write per gateway event (fewer where nothing can come between), and a client
that goes away closes the event source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from starlette.types import Message

from modaverse import ChatEvent, Done, Invocation, MetaResponse, TextDelta
from modaverse_web.app import _sse
from modaverse_web.responses import DONE_LINE, KEEPALIVE
from modaverse_web.streaming import EventStream

SCOPE: dict[str, Any] = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}


class Wire:
    """The ASGI ``send``/``receive`` pair of one connection; ``hang_up()`` is the client leaving."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.gone = asyncio.Event()

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    async def receive(self) -> Message:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]


async def test_keepalive_comments_fill_the_silences_only() -> None:
    async def events() -> AsyncGenerator[bytes, None]:
        yield b"data: 1\n\n"
        await asyncio.sleep(0.35)  # 3 keep-alive periods of silence
        yield b"data: 2\n\n"
        for i in range(3, 50):  # a burst: no comment has a reason to come between
            yield b"data: %d\n\n" % i

    wire = Wire()
    await asyncio.wait_for(EventStream(events(), "/t", keepalive_s=0.1)(SCOPE, wire.receive, wire.send), 5)
    bodies = wire.bodies()
    assert wire.sent[0]["type"] == "http.response.start" and wire.sent[0]["status"] == 200
    assert bodies[0] == b"data: 1\n\n"
    silence = bodies[1 : bodies.index(b"data: 2\n\n")]
    assert 2 <= len(silence) <= 4 and set(silence) == {KEEPALIVE}
    assert KEEPALIVE not in bodies[bodies.index(b"data: 2\n\n") :]
    assert bodies[-1] == b"" and wire.sent[-1]["more_body"] is False
    assert all(m["more_body"] for m in wire.sent[1:-1])


async def test_a_client_that_leaves_closes_the_event_source() -> None:
    closed = asyncio.Event()

    async def events() -> AsyncGenerator[bytes, None]:
        try:
            yield b"data: 1\n\n"
            await asyncio.Event().wait()  # a generation that never ends
            yield b"never"
        finally:
            closed.set()

    wire = Wire()
    task = asyncio.create_task(EventStream(events(), "/t", keepalive_s=0.05)(SCOPE, wire.receive, wire.send))
    await asyncio.sleep(0.2)
    wire.gone.set()
    await asyncio.wait_for(task, 5)
    assert closed.is_set()
    assert b"never" not in wire.bodies() and wire.bodies()[0] == b"data: 1\n\n"
    sent = len(wire.sent)
    await asyncio.sleep(0.15)  # no keep-alive timer outlives the stream
    assert len(wire.sent) == sent


async def _writes(events: list[ChatEvent]) -> list[bytes]:
    async def source() -> AsyncGenerator[ChatEvent, None]:
        for event in events[1:]:
            yield event

    def translate(event: ChatEvent) -> list[dict[str, Any]]:
        return [{"event": type(event).__name__}]

    return [w async for w in _sse(source(), events[0], translate, [{"event": "opening"}])]


async def test_one_write_per_event_and_none_where_nothing_can_come_between() -> None:
    done = Done(prompt_tokens=1, completion_tokens=2, elapsed_seconds=0.1, failed_invocations=0)
    text = [TextDelta("Modality: [TEXT] Prompt:"), TextDelta(" hi ###")]
    plain = await _writes([*text, MetaResponse("...", "hi", [], parsed=True), done])
    assert plain == [
        b'data: {"event":"opening"}\n\ndata: {"event":"TextDelta"}\n\n',
        b'data: {"event":"TextDelta"}\n\n',
        b'data: {"event":"MetaResponse"}\n\ndata: {"event":"Done"}\n\n' + DONE_LINE,
    ]
    image = Invocation(index=0, modality="image", prompt="a cat", model="")
    with_media = await _writes([*text, MetaResponse("...", "", [image], parsed=True), done])
    # A generation follows a meta-response that starts one: it is sent at once, on its own.
    assert with_media[2] == b'data: {"event":"MetaResponse"}\n\n'
    assert with_media[3] == b'data: {"event":"Done"}\n\n' + DONE_LINE

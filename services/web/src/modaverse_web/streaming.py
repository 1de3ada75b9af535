"""Answers that end when the client goes away: server-sent events and plain calls alike.

A closed connection (the playground's stop button, a killed script) cancels the gateway call at
once: the SDK's stream is closed, which cancels the gRPC call, which the gateway passes on to the
LLM and the generators. The event stream also sends a comment line when nothing has been sent for
``keepalive_s``, so proxies do not cut a long generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable
from typing import TypeVar

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from . import metrics
from .responses import KEEPALIVE

T = TypeVar("T")
log = logging.getLogger(__name__)


class ClientGone(Exception):
    """The client closed the connection before the answer was ready."""


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(receive: Receive, work: Awaitable[T], route: str) -> T:
    """``await work``, cancelled if the client disconnects first (then :class:`ClientGone`)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            metrics.CANCELLED.labels(route).inc()
        watcher.cancel()
    if task.cancelled():
        raise ClientGone()
    return task.result()


class EventStream(Response):
    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None], route: str, keepalive_s: float = 15.0) -> None:
        # Not Response.__init__: it would add "content-length: 0" for the empty body it renders.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        self.events = events
        self.route = route
        self.keepalive_s = keepalive_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        pump = asyncio.ensure_future(self._pump(send))
        watcher = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({pump, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not pump.done():
                pump.cancel()  # throws into the generator: the SDK stream closes, the gRPC call is cancelled
                metrics.CANCELLED.labels(self.route).inc()
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await pump
            await self.events.aclose()
        if not pump.cancelled() and pump.exception() is not None:
            log.error("the event stream of %s failed", self.route, exc_info=pump.exception())

    async def _pump(self, send: Send) -> None:
        # A plain loop over the events, and a timer handle for the keep-alive comments that starts a
        # task only when it fires: a task and a timed wait per event cost ~0.1 ms each, which a short
        # streamed answer notices.
        loop = asyncio.get_running_loop()
        lock = asyncio.Lock()  # a comment never lands inside an event, nor after the last one
        last_sent = loop.time()
        comments: set[asyncio.Task[None]] = set()

        async def comment() -> None:
            nonlocal last_sent
            async with lock:
                await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
            last_sent = loop.time()

        timer: asyncio.TimerHandle

        def due() -> None:
            nonlocal timer
            now = loop.time()
            if now - last_sent < self.keepalive_s:  # something was sent since this timer was set
                timer = loop.call_at(last_sent + self.keepalive_s, due)
                return
            if not comments:  # (one still waiting for a slow client is enough)
                task = asyncio.ensure_future(comment())
                comments.add(task)
                task.add_done_callback(comments.discard)
            timer = loop.call_at(now + self.keepalive_s, due)

        timer = loop.call_later(self.keepalive_s, due)
        try:
            async for chunk in self.events:
                async with lock:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                last_sent = loop.time()
        finally:
            timer.cancel()
            for task in comments:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*comments)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

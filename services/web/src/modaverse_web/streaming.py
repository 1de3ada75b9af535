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
from typing import Any, TypeVar

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
                pump.cancel()
                metrics.CANCELLED.labels(self.route).inc()
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await pump
            await self.events.aclose()
        if not pump.cancelled() and pump.exception() is not None:
            log.error("the event stream of %s failed", self.route, exc_info=pump.exception())

    async def _pump(self, send: Send) -> None:
        pending: asyncio.Future[Any] | None = None
        try:
            while True:
                pending = asyncio.ensure_future(anext(self.events))
                while not (await asyncio.wait({pending}, timeout=self.keepalive_s))[0]:
                    await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
                try:
                    chunk = pending.result()
                except StopAsyncIteration:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if pending is not None and not pending.done():
                pending.cancel()  # throws into the generator: the SDK stream closes, the gRPC call is cancelled
                with contextlib.suppress(BaseException):
                    await pending

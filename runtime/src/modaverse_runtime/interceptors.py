"""The one server interceptor: request ids, metrics, and the error → status mapping.

Every RPC of every ModaVerse server (health and reflection included) passes through
here, so servicers stay thin: they raise domain errors from :mod:`.errors` and this
module turns them into gRPC statuses with clear messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc
from grpc import aio

from . import metrics
from .devices import release_memory
from .errors import ModaverseError, is_out_of_memory, status_for
from .logs import REQUEST_ID_HEADER, request_id
from .security import RequestGuard

log = logging.getLogger("modaverse.rpc")

_Unary = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]
# A server-streaming handler is an async generator (ours) or a coroutine that calls context.write()
# (grpc's own health Watch).
_Streaming = Callable[[Any, aio.ServicerContext[Any, Any]], AsyncIterator[Any] | Awaitable[None]]

# Streams that never end on their own; at shutdown they are ended so they do not hold the drain.
WATCH_METHODS = frozenset({"/grpc.health.v1.Health/Watch"})


def _incoming_request_id(context: aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return uuid.uuid4().hex[:16]


class _CallScope:
    """Bookkeeping for one call: request id, in-flight gauge, latency, final code."""

    def __init__(self, method: str, context: aio.ServicerContext[Any, Any]) -> None:
        self.method = method
        self.context = context
        self.rid = _incoming_request_id(context)
        self.code = grpc.StatusCode.OK
        self._start = time.perf_counter()
        self._token = request_id.set(self.rid)
        metrics.IN_FLIGHT.inc()

    async def fail(self, exc: BaseException) -> None:
        code, message = status_for(exc)
        self.code = code
        if isinstance(exc, ModaverseError):
            log.info("%s -> %s: %s", self.method, code.name, message)
        elif is_out_of_memory(exc):
            # Out of GPU memory outside a batcher (which releases on its own): the traceback's finished
            # frames hold the failed call's tensors (and callers up the stack still hold the traceback).
            # Logged as text (a log record keeps its exc_info), those frames' locals cleared, and the
            # memory given back before answering.
            log.error("%s ran out of GPU memory:\n%s", self.method, "".join(traceback.format_exception(exc)))
            traceback.clear_frames(exc.__traceback__)
            exc.__traceback__ = None
            exc.__context__ = exc.__cause__ = None
            release_memory()
        else:
            log.error("%s failed", self.method, exc_info=exc)
        await self.context.abort(code, message, trailing_metadata=((REQUEST_ID_HEADER, self.rid),))

    def close(self) -> None:
        if self.code == grpc.StatusCode.OK:
            # A handler may set a code itself (e.g. health's NOT_FOUND) without raising.
            set_code = self.context.code()
            if isinstance(set_code, grpc.StatusCode):
                self.code = set_code
        metrics.IN_FLIGHT.dec()
        metrics.REQUESTS.labels(self.method, self.code.name).inc()
        metrics.LATENCY.labels(self.method).observe(time.perf_counter() - self._start)
        # A streaming handler that grpc abandons is closed later by the event loop's async-generator
        # finaliser, in another context, where the token cannot be reset (and need not be: the
        # context it was set in is gone).
        with contextlib.suppress(ValueError):
            request_id.reset(self._token)


@contextlib.asynccontextmanager
async def _call(method: str, context: aio.ServicerContext[Any, Any], guard: RequestGuard) -> AsyncIterator[None]:
    """Scope of one RPC: request id, metrics, auth/rate limit, and domain errors turned into statuses."""
    scope = _CallScope(method, context)
    try:
        context.set_trailing_metadata(((REQUEST_ID_HEADER, scope.rid),))
        if guard.active:
            metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
            guard.check(method, metadata, context.peer())
        yield
    except aio.AbortError:
        raise
    except (asyncio.CancelledError, GeneratorExit):
        scope.code = grpc.StatusCode.CANCELLED
        raise
    except Exception as exc:
        await scope.fail(exc)  # raises AbortError
    finally:
        scope.close()


def _wrap_unary(method: str, behavior: _Unary, guard: RequestGuard) -> _Unary:
    async def handler(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        async with _call(method, context, guard):
            return await behavior(request, context)

    return handler


async def _until(closing: asyncio.Event, work: Awaitable[None]) -> None:
    """Run ``work`` until it ends, or until ``closing`` is set: then it is cancelled and the call ends OK.

    (Cancelling the RPC's own task instead leaves grpc.aio's call unfinished and the server hangs.)
    """
    task = asyncio.ensure_future(work)
    closed = asyncio.ensure_future(closing.wait())
    try:
        await asyncio.wait({task, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        closed.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if not task.cancelled():
        task.result()  # its error, if it failed


def _wrap_streaming(method: str, behavior: _Streaming, guard: RequestGuard, closing: asyncio.Event) -> _Streaming:
    async def handler(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        async with _call(method, context, guard):
            stream = behavior(request, context)
            if isinstance(stream, AsyncGenerator):
                # Closed here, not by the garbage collector, when the call ends early: its cleanup
                # (e.g. freeing a batch slot) runs at once.
                async with contextlib.aclosing(stream):
                    async for response in stream:
                        yield response
            elif isinstance(stream, AsyncIterator):
                async for response in stream:
                    yield response
            elif method in WATCH_METHODS:
                await _until(closing, stream)
            else:
                await stream

    return handler


_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only in the type stubs


class ServerInterceptor(aio.ServerInterceptor):
    def __init__(self, guard: RequestGuard | None = None) -> None:
        self.guard = guard or RequestGuard()
        self.closing = asyncio.Event()  # set at shutdown: open Watch streams end

    def end_watches(self) -> None:
        """End every open Watch stream (at shutdown, once it has sent NOT_SERVING)."""
        self.closing.set()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method, cast(_Unary, handler.unary_unary), self.guard),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_streaming(method, cast(_Streaming, handler.unary_stream), self.guard, self.closing),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        # Client-streaming RPCs (reflection) pass through untouched.
        return handler

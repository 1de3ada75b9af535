"""One chat, end to end: validate → encode → stream the LLM → parse → generate concurrently.

Encoding sends only the media whose rows the gateway does not hold yet (encoder_cache.py): a
conversation's earlier media are encoded once, not again on every turn.

Events go to the client as they happen: LLM text deltas, the meta-response, then the events of
every invocation interleaved (started, progress, media chunks, done or error), then Done. One
failed invocation is reported as an InvocationError and does not fail the others. The chat's
deadline is passed to every downstream call; if the client goes away, the async generator is
closed and every downstream task is cancelled with it.

A direct generation (Generate) is one such invocation on its own, with no encoder and no LLM: the
same admission, routing, failover, metrics and events, except that a failure ends the call with its
status instead of becoming an InvocationError event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator

from grpc import aio

from modaverse_protos.encoder.v1 import encoder_pb2
from modaverse_protos.gateway.v1 import gateway_pb2
from modaverse_protos.generator.v1 import generator_pb2
from modaverse_runtime.errors import DeadlineExceeded, ModaverseError, ResourceExhausted

from . import convert, metrics
from .backends import Backends, downstream_error
from .deltas import DeltaBuffer
from .encoder_cache import CachingEncoder
from .metaresponse import Invocation, parse_meta_response
from .routes import Route, RoutingTable
from .settings import GatewaySettings
from .validation import validate_chat, validate_embed, validate_generate

log = logging.getLogger(__name__)


def _text_event(text: str) -> gateway_pb2.ChatEvent:
    return gateway_pb2.ChatEvent(text_delta=gateway_pb2.TextDelta(text=text))


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the call's deadline passed")
        return left


class ChatOrchestrator:
    def __init__(self, settings: GatewaySettings, backends: Backends, routes: RoutingTable) -> None:
        self.settings = settings
        self.backends = backends
        self.routes = routes
        self.encoder = CachingEncoder(
            lambda request, timeout: backends.encode(request, timeout),
            int(settings.encoder_cache_mb * 2**20),
            identify=lambda timeout: backends.encoder_id(timeout),
            id_ttl_s=settings.encoder_id_ttl_s,
        )
        self._slots = asyncio.Semaphore(settings.max_concurrent_chats)

    @contextlib.asynccontextmanager
    async def _admitted(self, time_remaining: float | None) -> AsyncIterator[Deadline]:
        """One of ``max_concurrent_chats`` slots (chats and direct generations share them), or
        RESOURCE_EXHAUSTED at once; yields the call's deadline."""
        if self._slots.locked():
            raise ResourceExhausted(
                f"the gateway is at its limit of {self.settings.max_concurrent_chats} concurrent chats and "
                "generations; retry shortly"
            )
        async with self._slots:
            metrics.CHATS_IN_FLIGHT.inc()
            try:
                yield Deadline(time_remaining or self.settings.default_deadline_s)
            finally:
                metrics.CHATS_IN_FLIGHT.dec()

    async def chat(
        self, request: gateway_pb2.ChatRequest, time_remaining: float | None
    ) -> AsyncIterator[gateway_pb2.ChatEvent]:
        validate_chat(request, self.settings, self.routes)
        async with self._admitted(time_remaining) as deadline:
            async for event in self._chat(request, deadline):
                yield event

    async def generate(
        self, request: gateway_pb2.GenerateRequest, time_remaining: float | None
    ) -> AsyncGenerator[gateway_pb2.ChatEvent, None]:
        """One generator invocation (index 0): its events, then Done (no usage). A failure raises."""
        route = validate_generate(request, self.settings, self.routes)
        invocation = Invocation(route.modality, request.prompt, request.options.model)
        async with self._admitted(time_remaining) as deadline:
            started = time.perf_counter()
            events = self.invocation(0, invocation, route, convert.direct_generator_request(request), deadline)
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event
            yield gateway_pb2.ChatEvent(done=gateway_pb2.Done(elapsed_seconds=time.perf_counter() - started))

    async def embed(self, request: gateway_pb2.EmbedRequest, time_remaining: float | None) -> gateway_pb2.EmbedResponse:
        """ImageBind vectors of the request's items: one Encode call without the adaptor, through the encoder's
        replicas (failover, retries, the backend token and the deadline as for a chat's encode). Not through the
        row cache (which holds a chat's rows, not vectors), and without a chat slot: an Embed holds no stream,
        and a full encoder answers RESOURCE_EXHAUSTED after the busy wait."""
        validate_embed(request, self.settings)
        deadline = Deadline(time_remaining or self.settings.default_deadline_s)
        reply = await self.backends.encode(convert.embed_encode_request(request), deadline.remaining())
        return convert.embed_response(reply, len(request.items))

    async def _chat(self, request: gateway_pb2.ChatRequest, deadline: Deadline) -> AsyncIterator[gateway_pb2.ChatEvent]:
        started = time.perf_counter()
        encode = convert.encode_request(request)
        encoded = await self.encoder.encode(encode, deadline.remaining()) if encode.media else None
        llm_request = convert.llm_request(request, encoded or encoder_pb2.EncodeResponse())
        raw, usage = "", gateway_pb2.Usage()
        deltas = None if request.options.omit_text_deltas else DeltaBuffer(self.settings.text_delta_interval_ms / 1000)
        async for item in self.backends.llm_generate(llm_request, deadline.remaining()):
            if item.WhichOneof("event") == "delta":
                if deltas is not None and (text := deltas.add(item.delta)):
                    yield _text_event(text)
            else:
                raw = item.final.text
                usage = gateway_pb2.Usage(
                    prompt_tokens=item.final.prompt_tokens, completion_tokens=item.final.completion_tokens
                )
        if deltas is not None and (text := deltas.flush()):
            yield _text_event(text)
        parsed = parse_meta_response(raw)
        routes = [self._route(inv) for inv in parsed.invocations]
        yield convert.meta_response_event(parsed, [r.name if isinstance(r, Route) else "" for r in routes])
        failed = 0
        if not request.options.meta_response_only and parsed.invocations:
            async for event in self._fan_out(request, parsed.invocations, routes, deadline):
                failed += event.WhichOneof("event") == "invocation_error"
                yield event
        elapsed = time.perf_counter() - started
        yield gateway_pb2.ChatEvent(
            done=gateway_pb2.Done(usage=usage, elapsed_seconds=elapsed, failed_invocations=failed)
        )

    def _route(self, invocation: Invocation) -> Route | ModaverseError:
        try:
            return self.routes.resolve(invocation.modality, invocation.model)
        except ModaverseError as exc:
            return exc

    async def _fan_out(
        self,
        request: gateway_pb2.ChatRequest,
        invocations: list[Invocation],
        routes: list[Route | ModaverseError],
        deadline: Deadline,
    ) -> AsyncIterator[gateway_pb2.ChatEvent]:
        queue: asyncio.Queue[gateway_pb2.ChatEvent | None] = asyncio.Queue()
        tasks = [
            asyncio.create_task(self._invoke(i, inv, route, request, deadline, queue), name=f"invocation-{i}")
            for i, (inv, route) in enumerate(zip(invocations, routes, strict=True))
        ]
        try:
            finished = 0
            while finished < len(tasks):
                event = await queue.get()
                if event is None:
                    finished += 1
                else:
                    yield event
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _invoke(
        self,
        index: int,
        invocation: Invocation,
        route: Route | ModaverseError,
        request: gateway_pb2.ChatRequest,
        deadline: Deadline,
        queue: asyncio.Queue[gateway_pb2.ChatEvent | None],
    ) -> None:
        """A chat's invocation: its events go to ``queue``; a failure becomes an InvocationError event."""
        try:
            events = self.invocation(index, invocation, route, convert.generator_request(invocation, request), deadline)
            async with contextlib.aclosing(events):
                async for event in events:
                    queue.put_nowait(event)
        except ModaverseError as exc:
            queue.put_nowait(self._error(index, exc))
        finally:
            queue.put_nowait(None)

    async def invocation(
        self,
        index: int,
        invocation: Invocation,
        route: Route | ModaverseError,
        request: generator_pb2.GenerateRequest,
        deadline: Deadline,
    ) -> AsyncGenerator[gateway_pb2.ChatEvent, None]:
        """One generator invocation on ``route`` (failover and retries in its replica set): started,
        progress, media chunks, done. A failure raises a ModaverseError with the status it should have
        (a route that could not be resolved is passed in as its error). Counted per route and outcome."""
        route_name = route.name if isinstance(route, Route) else "unrouted"
        outcome = "ok"
        metrics.INVOCATIONS_IN_FLIGHT.labels(route_name).inc()
        try:
            if isinstance(route, ModaverseError):
                raise route
            proto_inv = gateway_pb2.Invocation(
                index=index,
                modality=convert.MODALITY_PROTO[invocation.modality],
                prompt=invocation.prompt,
                model=route.name,
            )
            endpoint = ",".join(route.endpoints)
            yield gateway_pb2.ChatEvent(
                invocation_started=gateway_pb2.InvocationStarted(invocation=proto_inv, endpoint=endpoint)
            )
            stream = self.backends.generate(route, request, deadline.remaining())
            try:
                async with contextlib.aclosing(stream):
                    async for response in stream:
                        event = convert.generator_event(index, response)
                        if event is not None:
                            yield event
            except aio.AioRpcError as error:
                raise downstream_error(f"generator {route_name}", error) from None
        except ModaverseError as exc:
            outcome = exc.code.name
            raise
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "CANCELLED"
            raise
        except Exception as exc:
            log.exception("invocation %d failed", index)
            outcome = "INTERNAL"
            raise ModaverseError(f"internal error ({type(exc).__name__})") from exc
        finally:
            metrics.INVOCATIONS_IN_FLIGHT.labels(route_name).dec()
            metrics.INVOCATIONS.labels(route_name, outcome).inc()

    @staticmethod
    def _error(index: int, exc: ModaverseError) -> gateway_pb2.ChatEvent:
        return gateway_pb2.ChatEvent(
            invocation_error=gateway_pb2.InvocationError(index=index, code=exc.code.name, message=exc.message)
        )

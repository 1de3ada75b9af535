"""``Client`` (blocking) and ``AsyncClient`` (asyncio) for the ModaVerse gateway.

    from modaverse import Client
    with Client("localhost:50050") as client:
        result = client.chat("Draw a red circle")
        print(result.text); result.save("outputs/")
        for event in client.chat("Describe this", images=["cat.jpg"], stream=True):
            ...
        client.generate("image", "a red circle").save("outputs/")  # one generator, no LLM
        e = client.embed(["a red circle"], images=["out.png"])  # ImageBind vectors, no LLM
        print(e.cosine(e.texts, e.images))

Failed calls raise :class:`modaverse.ModaverseError` subclasses (``InvalidArgument``,
``ResourceExhausted``, ``Unavailable``, ``DeadlineExceeded``, ``Unauthenticated`` …). A generator
that fails does not fail the chat: it shows up in ``result.errors``; a failed ``generate`` raises.
A call refused before its first event (RESOURCE_EXHAUSTED, UNAVAILABLE) is tried again under the
client's ``retry`` policy (retry.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar, overload

import grpc
from grpc import aio

from modaverse_protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from .chat import (
    GenerationOptions,
    MediaInput,
    ResultBuilder,
    Turn,
    build_generate_request,
    build_request,
    to_event,
)
from .embed import build_embed_request, embeddings_from
from .encoder import MODALITY_NAMES
from .errors import from_rpc_error
from .retry import NO_RETRY, Attempts, RetryPolicy
from .types import ChatEvent, ChatResult, Embeddings

DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class ModelRoute:
    modality: str
    model: str
    endpoints: list[str]
    is_default: bool
    healthy: bool


def _options(max_message_mb: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_mb * 2**20),
        ("grpc.max_receive_message_length", max_message_mb * 2**20),
    ]


def _credentials(tls: bool | str | Path, token: str | None) -> grpc.ChannelCredentials | None:
    if not tls:
        if token:
            raise ValueError("a bearer token needs TLS (pass tls=True or a CA certificate path)")
        return None
    root = Path(tls).read_bytes() if isinstance(tls, str | Path) and not isinstance(tls, bool) else None
    creds = grpc.ssl_channel_credentials(root_certificates=root)
    if token:
        creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
    return creds


# The gateway's two streaming RPCs answer with the same events.
_Request = TypeVar("_Request", gateway_pb2.ChatRequest, gateway_pb2.GenerateRequest)
# Its unary RPCs.
_UnaryRequest = TypeVar("_UnaryRequest", gateway_pb2.EmbedRequest, gateway_pb2.ListModelsRequest)
_Reply = TypeVar("_Reply", gateway_pb2.EmbedResponse, gateway_pb2.ListModelsResponse)


def _code(error: grpc.RpcError) -> grpc.StatusCode | None:
    code = getattr(error, "code", None)
    return code() if callable(code) else None


def _result(events: Iterable[ChatEvent]) -> ChatResult:
    builder = ResultBuilder()
    for event in events:
        builder.add(event)
    return builder.result


def _routes(reply: gateway_pb2.ListModelsResponse) -> list[ModelRoute]:
    return [
        ModelRoute(MODALITY_NAMES.get(r.modality, "?"), r.model, list(r.endpoints), r.is_default, r.healthy)
        for r in reply.generators
    ]


class Client:
    """Blocking client. ``tls``: False, True (system CAs) or a CA certificate path. ``retry``: how a call
    refused before its first event is tried again (None: never)."""

    def __init__(
        self,
        target: str = "localhost:50050",
        *,
        tls: bool | str | Path = False,
        token: str | None = None,
        timeout: float | None = 600.0,
        max_message_mb: int = 64,
        retry: RetryPolicy | None = DEFAULT_RETRY,
    ) -> None:
        creds = _credentials(tls, token)
        opts = _options(max_message_mb)
        self._channel = grpc.secure_channel(target, creds, opts) if creds else grpc.insecure_channel(target, opts)
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)
        self.timeout = timeout
        self.retry = retry or NO_RETRY

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @overload
    def chat(
        self,
        text: str,
        *,
        images: Sequence[MediaInput] = ...,
        audio: Sequence[MediaInput] = ...,
        video: Sequence[MediaInput] = ...,
        history: Sequence[Turn] = ...,
        stream: Literal[False] = False,
        timeout: float | None = ...,
        generators: Mapping[str, GenerationOptions] | None = ...,
        meta_response_only: bool = ...,
        adapter: str = ...,
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        seed: int | None = ...,
    ) -> ChatResult: ...
    @overload
    def chat(
        self,
        text: str,
        *,
        images: Sequence[MediaInput] = ...,
        audio: Sequence[MediaInput] = ...,
        video: Sequence[MediaInput] = ...,
        history: Sequence[Turn] = ...,
        stream: Literal[True],
        timeout: float | None = ...,
        generators: Mapping[str, GenerationOptions] | None = ...,
        meta_response_only: bool = ...,
        adapter: str = ...,
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        seed: int | None = ...,
    ) -> Iterator[ChatEvent]: ...

    def chat(
        self,
        text: str,
        *,
        images: Sequence[MediaInput] = (),
        audio: Sequence[MediaInput] = (),
        video: Sequence[MediaInput] = (),
        history: Sequence[Turn] = (),
        stream: bool = False,
        timeout: float | None = None,
        generators: Mapping[str, GenerationOptions] | None = None,
        meta_response_only: bool = False,
        adapter: str = "",
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> ChatResult | Iterator[ChatEvent]:
        """Send one user turn (plus ``history``). ``stream=True`` yields typed events as they come;
        otherwise the final :class:`ChatResult` is returned and no per-token events are sent."""
        request = build_request(
            text,
            images=images,
            audio=audio,
            video=video,
            history=history,
            generators=generators,
            meta_response_only=meta_response_only,
            adapter=adapter,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            text_deltas=stream,  # a final result needs no per-token events
        )
        events = self._events(self._stub.Chat, request, timeout or self.timeout)
        return events if stream else _result(events)

    @overload
    def generate(
        self,
        modality: str,
        prompt: str,
        *,
        options: GenerationOptions | None = ...,
        image: MediaInput | None = ...,
        stream: Literal[False] = False,
        timeout: float | None = ...,
    ) -> ChatResult: ...
    @overload
    def generate(
        self,
        modality: str,
        prompt: str,
        *,
        options: GenerationOptions | None = ...,
        image: MediaInput | None = ...,
        stream: Literal[True],
        timeout: float | None = ...,
    ) -> Iterator[ChatEvent]: ...

    def generate(
        self,
        modality: str,
        prompt: str,
        *,
        options: GenerationOptions | None = None,
        image: MediaInput | None = None,
        stream: bool = False,
        timeout: float | None = None,
    ) -> ChatResult | Iterator[ChatEvent]:
        """One generation, no LLM: ``modality`` is "image", "video" or "audio" (ValueError otherwise);
        ``options.model`` picks the generator (empty: the modality's default); ``image`` (a path, bytes or a
        Media message) is the input of a generator that transforms one (image-to-image). The result's ``media``
        holds the one file (``text`` is empty, ``meta_response`` None); ``stream=True`` yields its
        events (InvocationStarted, Progress, MediaChunk, InvocationDone, Done). A failed generation
        raises (``InvalidArgument``, ``NotFound``, ``Unavailable``, ``ResourceExhausted`` …)."""
        request = build_generate_request(modality, prompt, options, image)
        events = self._events(self._stub.Generate, request, timeout or self.timeout)
        return events if stream else _result(events)

    def _events(
        self,
        method: grpc.UnaryStreamMultiCallable[_Request, gateway_pb2.ChatEvent],
        request: _Request,
        timeout: float | None,
    ) -> Iterator[ChatEvent]:
        attempts = Attempts(self.retry, timeout)
        while True:
            call = method(request, timeout=attempts.timeout())
            started = False
            try:
                for raw in call:
                    started = True  # from here on the error is the caller's: output cannot be taken back
                    event = to_event(raw)
                    if event is not None:
                        yield event
                return
            except grpc.RpcError as error:
                pause = attempts.pause(_code(error), started)
                if pause is None:
                    raise from_rpc_error(error) from None
            finally:
                call.cancel()  # no-op when finished; stops the server's work if the caller stopped reading
            time.sleep(pause)

    def embed(
        self,
        texts: Sequence[str] = (),
        *,
        images: Sequence[MediaInput] = (),
        audio: Sequence[MediaInput] = (),
        video: Sequence[MediaInput] = (),
        timeout: float | None = None,
    ) -> Embeddings:
        """ImageBind vectors of ``texts`` and media in its joint space (the gateway's ``Embed``: the encoder
        only, no adaptor and no LLM), as :class:`Embeddings`: per kind an (n, dim) float32 array, rows in the
        order given, (0, dim) for a kind given none. ``texts`` may be one string. ``images``, ``audio`` and
        ``video`` are paths, bytes (the server sniffs the type) or Media messages, as for ``chat``. All items go
        in one call (at most the gateway's ``MODAVERSE_MAX_EMBED_ITEMS``, 32 by default); nothing at all is a
        ValueError before any call. Bad items raise ``InvalidArgument`` naming ``items[i]`` (texts first, then
        images, audio, video), a down encoder ``Unavailable``; RESOURCE_EXHAUSTED and UNAVAILABLE are retried
        under the client's ``retry`` policy."""
        request, counts = build_embed_request(texts, images, audio, video)
        return embeddings_from(self._unary(self._stub.Embed, request, timeout or self.timeout), counts)

    def list_models(self) -> list[ModelRoute]:
        return _routes(self._unary(self._stub.ListModels, gateway_pb2.ListModelsRequest(), self.timeout))

    def _unary(
        self,
        method: grpc.UnaryUnaryMultiCallable[_UnaryRequest, _Reply],
        request: _UnaryRequest,
        timeout: float | None,
    ) -> _Reply:
        """One unary call, tried again under the retry policy (nothing has reached the caller before it answers)."""
        attempts = Attempts(self.retry, timeout)
        while True:
            try:
                return method(request, timeout=attempts.timeout())
            except grpc.RpcError as error:
                pause = attempts.pause(_code(error), started=False)
                if pause is None:
                    raise from_rpc_error(error) from None
            time.sleep(pause)


class AsyncClient:
    """asyncio client with the same options as :class:`Client`."""

    def __init__(
        self,
        target: str = "localhost:50050",
        *,
        tls: bool | str | Path = False,
        token: str | None = None,
        timeout: float | None = 600.0,
        max_message_mb: int = 64,
        retry: RetryPolicy | None = DEFAULT_RETRY,
    ) -> None:
        creds = _credentials(tls, token)
        opts = _options(max_message_mb)
        self._channel = aio.secure_channel(target, creds, opts) if creds else aio.insecure_channel(target, opts)
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)
        self.timeout = timeout
        self.retry = retry or NO_RETRY

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def chat(
        self,
        text: str,
        *,
        images: Sequence[MediaInput] = (),
        audio: Sequence[MediaInput] = (),
        video: Sequence[MediaInput] = (),
        history: Sequence[Turn] = (),
        timeout: float | None = None,
        generators: Mapping[str, GenerationOptions] | None = None,
        meta_response_only: bool = False,
        adapter: str = "",
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> ChatResult:
        """The final :class:`ChatResult` of one user turn (no per-token events are sent)."""
        builder = ResultBuilder()
        async for event in self.stream(
            text,
            images=images,
            audio=audio,
            video=video,
            history=history,
            timeout=timeout,
            generators=generators,
            meta_response_only=meta_response_only,
            adapter=adapter,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            text_deltas=False,  # a final result needs no per-token events
        ):
            builder.add(event)
        return builder.result

    async def stream(
        self,
        text: str,
        *,
        images: Sequence[MediaInput] = (),
        audio: Sequence[MediaInput] = (),
        video: Sequence[MediaInput] = (),
        history: Sequence[Turn] = (),
        timeout: float | None = None,
        generators: Mapping[str, GenerationOptions] | None = None,
        meta_response_only: bool = False,
        adapter: str = "",
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        text_deltas: bool = True,
    ) -> AsyncGenerator[ChatEvent, None]:
        """Typed events of one user turn as they come (``text_deltas=False``: no per-token events)."""
        request = build_request(
            text,
            images=images,
            audio=audio,
            video=video,
            history=history,
            generators=generators,
            meta_response_only=meta_response_only,
            adapter=adapter,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            text_deltas=text_deltas,
        )
        async with contextlib.aclosing(self._events(self._stub.Chat, request, timeout)) as events:
            async for event in events:
                yield event

    async def generate(
        self,
        modality: str,
        prompt: str,
        *,
        options: GenerationOptions | None = None,
        image: MediaInput | None = None,
        timeout: float | None = None,
    ) -> ChatResult:
        """The result of one generation with no LLM (see :meth:`Client.generate`)."""
        builder = ResultBuilder()
        async for event in self.generate_stream(modality, prompt, options=options, image=image, timeout=timeout):
            builder.add(event)
        return builder.result

    async def generate_stream(
        self,
        modality: str,
        prompt: str,
        *,
        options: GenerationOptions | None = None,
        image: MediaInput | None = None,
        timeout: float | None = None,
    ) -> AsyncGenerator[ChatEvent, None]:
        """The events of one generation as they come (see :meth:`Client.generate`)."""
        request = build_generate_request(modality, prompt, options, image)
        async with contextlib.aclosing(self._events(self._stub.Generate, request, timeout)) as events:
            async for event in events:
                yield event

    async def _events(
        self,
        method: aio.UnaryStreamMultiCallable[_Request, gateway_pb2.ChatEvent],
        request: _Request,
        timeout: float | None,
    ) -> AsyncGenerator[ChatEvent, None]:
        attempts = Attempts(self.retry, timeout or self.timeout)
        while True:
            call = method(request, timeout=attempts.timeout())
            started = False
            try:
                async for raw in call:
                    started = True  # from here on the error is the caller's: output cannot be taken back
                    event = to_event(raw)
                    if event is not None:
                        yield event
                return
            except aio.AioRpcError as error:
                pause = attempts.pause(error.code(), started)
                if pause is None:
                    raise from_rpc_error(error) from None
            finally:
                call.cancel()  # stops the server's work if the caller stopped reading
            await asyncio.sleep(pause)

    async def embed(
        self,
        texts: Sequence[str] = (),
        *,
        images: Sequence[MediaInput] = (),
        audio: Sequence[MediaInput] = (),
        video: Sequence[MediaInput] = (),
        timeout: float | None = None,
    ) -> Embeddings:
        """ImageBind vectors of texts and media (see :meth:`Client.embed`)."""
        request, counts = build_embed_request(texts, images, audio, video)
        return embeddings_from(await self._unary(self._stub.Embed, request, timeout or self.timeout), counts)

    async def list_models(self) -> list[ModelRoute]:
        return _routes(await self._unary(self._stub.ListModels, gateway_pb2.ListModelsRequest(), self.timeout))

    async def _unary(
        self,
        method: aio.UnaryUnaryMultiCallable[_UnaryRequest, _Reply],
        request: _UnaryRequest,
        timeout: float | None,
    ) -> _Reply:
        """One unary call, tried again under the retry policy (see :meth:`Client._unary`)."""
        attempts = Attempts(self.retry, timeout)
        while True:
            try:
                return await method(request, timeout=attempts.timeout())
            except aio.AioRpcError as error:
                pause = attempts.pause(error.code(), started=False)
                if pause is None:
                    raise from_rpc_error(error) from None
            await asyncio.sleep(pause)

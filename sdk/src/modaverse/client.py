"""``Client`` (blocking) and ``AsyncClient`` (asyncio) for the ModaVerse gateway.

    from modaverse import Client
    with Client("localhost:50050") as client:
        result = client.chat("Draw a red circle")
        print(result.text); result.save("outputs/")
        for event in client.chat("Describe this", images=["cat.jpg"], stream=True):
            ...

Failed calls raise :class:`modaverse.ModaverseError` subclasses (``InvalidArgument``,
``ResourceExhausted``, ``Unavailable``, ``DeadlineExceeded``, ``Unauthenticated`` …). A generator
that fails does not fail the chat: it shows up in ``result.errors``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import grpc
from grpc import aio

from modaverse_protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from .chat import GenerationOptions, MediaInput, ResultBuilder, Turn, build_request, to_event
from .encoder import MODALITY_NAMES
from .errors import from_rpc_error
from .types import ChatEvent, ChatResult


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


def _routes(reply: gateway_pb2.ListModelsResponse) -> list[ModelRoute]:
    return [
        ModelRoute(MODALITY_NAMES.get(r.modality, "?"), r.model, list(r.endpoints), r.is_default, r.healthy)
        for r in reply.generators
    ]


class Client:
    """Blocking client. ``tls``: False, True (system CAs) or a CA certificate path."""

    def __init__(
        self,
        target: str = "localhost:50050",
        *,
        tls: bool | str | Path = False,
        token: str | None = None,
        timeout: float | None = 600.0,
        max_message_mb: int = 64,
    ) -> None:
        creds = _credentials(tls, token)
        opts = _options(max_message_mb)
        self._channel = grpc.secure_channel(target, creds, opts) if creds else grpc.insecure_channel(target, opts)
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)
        self.timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @overload
    def chat(self, text: str, *, stream: Literal[False] = False, **kw: Any) -> ChatResult: ...
    @overload
    def chat(self, text: str, *, stream: Literal[True], **kw: Any) -> Iterator[ChatEvent]: ...

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
        generators: dict[str, GenerationOptions] | None = None,
        **options: Any,
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
            text_deltas=stream,  # a final result needs no per-token events
            **options,
        )
        events = self._events(request, timeout or self.timeout)
        if stream:
            return events
        builder = ResultBuilder()
        for event in events:
            builder.add(event)
        return builder.result

    def _events(self, request: gateway_pb2.ChatRequest, timeout: float | None) -> Iterator[ChatEvent]:
        call = self._stub.Chat(request, timeout=timeout)
        try:
            for raw in call:
                event = to_event(raw)
                if event is not None:
                    yield event
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()  # no-op when finished; stops the server's work if the caller stopped reading

    def list_models(self) -> list[ModelRoute]:
        try:
            return _routes(self._stub.ListModels(gateway_pb2.ListModelsRequest(), timeout=self.timeout))
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None


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
    ) -> None:
        creds = _credentials(tls, token)
        opts = _options(max_message_mb)
        self._channel = aio.secure_channel(target, creds, opts) if creds else aio.insecure_channel(target, opts)
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)
        self.timeout = timeout

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
        generators: dict[str, GenerationOptions] | None = None,
        **options: Any,
    ) -> ChatResult:
        builder = ResultBuilder()
        async for event in self.stream(
            text,
            images=images,
            audio=audio,
            video=video,
            history=history,
            timeout=timeout,
            generators=generators,
            text_deltas=False,  # a final result needs no per-token events
            **options,
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
        generators: dict[str, GenerationOptions] | None = None,
        **options: Any,
    ) -> AsyncGenerator[ChatEvent, None]:
        request = build_request(
            text, images=images, audio=audio, video=video, history=history, generators=generators, **options
        )
        call = self._stub.Chat(request, timeout=timeout or self.timeout)
        try:
            async for raw in call:
                event = to_event(raw)
                if event is not None:
                    yield event
        except aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()

    async def list_models(self) -> list[ModelRoute]:
        try:
            reply = await self._stub.ListModels(gateway_pb2.ListModelsRequest(), timeout=self.timeout)
        except aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return _routes(reply)

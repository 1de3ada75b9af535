"""Typed calls to the encoder, the LLM and the generators, with deadlines and failover.

Downstream failures become domain errors here, so the interceptor reports them with a
status the client can act on: the downstream's INVALID_ARGUMENT stays INVALID_ARGUMENT (the
client's input was bad), UNAVAILABLE after every replica was tried becomes UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from typing import Any

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modaverse_protos.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from modaverse_protos.generator.v1 import generator_pb2, generator_pb2_grpc
from modaverse_protos.llm.v1 import llm_pb2, llm_pb2_grpc
from modaverse_protos.statuses import HOP_BY_HOP
from modaverse_runtime.errors import BY_STATUS, ModaverseError, Unavailable
from modaverse_runtime.logs import REQUEST_ID_HEADER, request_id
from modaverse_runtime.security import WatchedFile, read_token
from modaverse_runtime.settings import comma_list
from modaverse_runtime.tls import channel_credentials

from .discovery import ChannelConfig
from .replicas import Replica, ReplicaSet
from .routes import Route, RoutingTable
from .settings import GatewaySettings


def downstream_error(service: str, error: aio.AioRpcError) -> ModaverseError:
    """The error a downstream failure is reported with: the API's own statuses pass on (naming the service),
    except those about the gateway's hop (its credentials); they and any other status are UNAVAILABLE."""
    code = error.code()
    cls = Unavailable if code in HOP_BY_HOP else BY_STATUS.get(code, Unavailable)
    return cls(f"{service}: {error.details() or code.name}")


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _left(deadline: float | None) -> float | None:
    """A try's timeout: the time left of the call, which a wait for a busy service has used some of."""
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


def _metadata(token: WatchedFile[str] | None) -> tuple[tuple[str, str], ...]:
    request = (REQUEST_ID_HEADER, request_id.get())
    return (request,) if token is None else (request, ("authorization", f"Bearer {token.get()}"))


class Backends:
    def __init__(self, settings: GatewaySettings, routes: RoutingTable) -> None:
        self.settings = settings
        # The gateway's credentials towards the backends (their MODAVERSE_AUTH_TOKENS_FILE), followed as it rotates.
        self._token = WatchedFile(settings.backend_token_file, read_token) if settings.backend_token_file else None
        self._channel_config = ChannelConfig(
            max_message_bytes=settings.max_message_bytes,
            credentials=channel_credentials(settings),
            max_reconnect_backoff_ms=settings.max_reconnect_backoff_ms,
        )
        self.encoder = self._replicas("encoder", comma_list(settings.encoder_targets))
        self.llm = self._replicas("llm", comma_list(settings.llm_targets))
        self.generators: dict[str, ReplicaSet] = {}
        self.add_routes(routes)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What every call to a backend carries: the request id, and the backend token when one is set."""
        return _metadata(self._token)

    def _replicas(self, name: str, targets: list[str], wake_s: float = 0.0) -> ReplicaSet:
        s = self.settings
        return ReplicaSet(
            name,
            targets,
            attempts=s.retry_attempts,
            backoff_s=s.retry_backoff_ms / 1000,
            cooldown_s=s.unhealthy_cooldown_s,
            channel_config=self._channel_config,
            wake_s=wake_s,
            busy_wait_s=s.busy_wait_s,
        )

    def add_routes(self, routes: RoutingTable) -> None:
        # A generator may be scaled to zero: the call waits (counted in the gateway's in-flight gauge,
        # which its autoscaler watches) until a replica is up or generator_wake_s has passed.
        for name, route in routes.routes.items():
            self.generators[name] = self._replicas(
                f"generator {name}", list(route.endpoints), self.settings.generator_wake_s
            )

    async def _on_encoder(
        self, rpc: Callable[[encoder_pb2_grpc.EncoderServiceStub, float | None], Any], timeout: float | None
    ) -> Any:
        """``await rpc(stub, seconds left)`` on an encoder replica (the replica set's retries and failover;
        ``Any``: the generated stubs type their calls as the response itself)."""
        deadline = _deadline(timeout)

        async def call(replica: Replica) -> Any:
            return await rpc(encoder_pb2_grpc.EncoderServiceStub(replica.channel), _left(deadline))

        try:
            return await self.encoder.call(call, deadline=deadline)
        except aio.AioRpcError as error:
            raise downstream_error("encoder", error) from None

    async def encode(self, request: encoder_pb2.EncodeRequest, timeout: float | None) -> encoder_pb2.EncodeResponse:
        reply: encoder_pb2.EncodeResponse = await self._on_encoder(
            lambda stub, left: stub.Encode(request, timeout=left, metadata=self.metadata()), timeout
        )
        return reply

    async def encoder_id(self, timeout: float | None) -> str:
        """The encoder's id, from a replica's Info (what its EncodeResponses are stamped with)."""
        reply: encoder_pb2.InfoResponse = await self._on_encoder(
            lambda stub, left: stub.Info(encoder_pb2.InfoRequest(), timeout=left, metadata=self.metadata()), timeout
        )
        return str(reply.encoder_id)

    async def llm_generate(
        self, request: llm_pb2.GenerateRequest, timeout: float | None
    ) -> AsyncIterator[llm_pb2.GenerateResponse]:
        deadline = _deadline(timeout)

        def open_stream(replica: Replica) -> AsyncIterable[llm_pb2.GenerateResponse]:
            stub = llm_pb2_grpc.LLMServiceStub(replica.channel)
            return stub.Generate(request, timeout=_left(deadline), metadata=self.metadata())

        try:
            async for item in self.llm.stream(open_stream, deadline=deadline):
                yield item
        except aio.AioRpcError as error:
            raise downstream_error("llm", error) from None

    def generate(
        self, route: Route, request: generator_pb2.GenerateRequest, timeout: float | None
    ) -> AsyncGenerator[generator_pb2.GenerateResponse, None]:
        """Raw stream: the orchestrator maps its errors (a chat reports a failed invocation as an event,
        a direct generation ends with the error)."""

        deadline = _deadline(timeout)

        def open_stream(replica: Replica) -> AsyncIterable[generator_pb2.GenerateResponse]:
            stub = generator_pb2_grpc.GeneratorServiceStub(replica.channel)
            return stub.Generate(request, timeout=_left(deadline), metadata=self.metadata())

        return self.generators[route.name].stream(open_stream, deadline=deadline)

    async def serving(self, target_set: ReplicaSet) -> bool:
        """True if any replica answers SERVING within a second."""

        async def check(replica: Replica) -> bool:
            try:
                reply = await health_pb2_grpc.HealthStub(replica.channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1.0
                )
            except aio.AioRpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        results = await asyncio.gather(*(check(r) for r in target_set.replicas))
        return any(results)

    async def close(self) -> None:
        for replica_set in (self.encoder, self.llm, *self.generators.values()):
            await replica_set.close()

"""Server lifecycle shared by every ModaVerse service.

start:    bind (grpc.aio, large message limits, concurrency cap, our interceptor, connections
          closed after MODAVERSE_MAX_CONNECTION_AGE_S), health NOT_SERVING, reflection (unless
          MODAVERSE_REFLECTION is off), metrics on, then load models off the event loop and flip
          health to SERVING.
SIGTERM:  health NOT_SERVING (probes and load balancers stop sending), the drain delay
          (still accepting), end health Watch streams, stop accepting, let in-flight
          calls finish within the grace period, then unload models.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from . import metrics
from .interceptors import ServerInterceptor
from .models import ModelBase
from .security import request_guard
from .settings import ServerSettings
from .tls import server_credentials

log = logging.getLogger(__name__)


def server_options(settings: ServerSettings) -> list[tuple[str, int]]:
    options = [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    if settings.max_connection_age_s > 0:
        # A client resolves a headless Service's DNS name only when a connection breaks: without an age limit
        # a gateway keeps calling the pods it first found, and pods added by an autoscaler get nothing. After
        # the age (gRPC adds +-10 % jitter) the server sends GOAWAY: new calls go on a new connection, made
        # after resolving again; calls in flight finish on the old one within the grace period.
        options.append(("grpc.max_connection_age_ms", round(settings.max_connection_age_s * 1000)))
        if settings.max_connection_age_grace_s > 0:
            options.append(("grpc.max_connection_age_grace_ms", round(settings.max_connection_age_grace_s * 1000)))
    return options


@dataclass
class ServiceSpec:
    """What a service plugs into the shared lifecycle."""

    name: str  # short name for logs, e.g. "encoder"
    service_names: Sequence[str]  # full proto service names, for health and reflection
    register: Callable[[aio.Server], None]  # adds the servicers
    load: Callable[[], Awaitable[None]]  # loads models (must not block the loop)
    unload: Callable[[], Awaitable[None]]


def model_service(
    name: str, service_names: Sequence[str], model: ModelBase, register: Callable[[aio.Server], None]
) -> ServiceSpec:
    """The usual spec: one model, loaded off the event loop; on shutdown closed, then unloaded."""

    async def load() -> None:
        await asyncio.to_thread(model.load)

    async def unload() -> None:
        await model.close()
        await asyncio.to_thread(model.unload)

    return ServiceSpec(name, service_names, register, load, unload)


class ModaverseServer:
    def __init__(self, spec: ServiceSpec, settings: ServerSettings) -> None:
        self.spec = spec
        self.settings = settings
        self.port = 0
        self.ready = asyncio.Event()
        self.load_error: BaseException | None = None
        self._health = health.aio.HealthServicer()
        self._server: aio.Server | None = None
        self._interceptor = ServerInterceptor(request_guard(settings))
        self._load_task: asyncio.Task[None] | None = None
        self._stopping = False

    def _all_names(self) -> list[str]:
        return ["", *self.spec.service_names]

    async def _set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in self._all_names():
            await self._health.set(name, status)
        metrics.MODEL_READY.set(1 if serving else 0)

    async def start(self) -> int:
        """Bind and start serving; models load in the background. Returns the bound port."""
        s = self.settings
        server = aio.server(
            interceptors=[self._interceptor],
            options=server_options(s),
            maximum_concurrent_rpcs=s.max_concurrent_rpcs,
        )
        self.spec.register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if s.reflection:
            reflection.enable_server_reflection(
                [*self.spec.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
            )
        credentials = server_credentials(s)
        address = f"{s.host}:{s.port}"
        if credentials is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, credentials)
        if self.port == 0:
            raise OSError(f"could not bind {s.host}:{s.port}")
        await self._set_health(False)
        await server.start()
        self._server = server
        tls = "off" if credentials is None else ("mTLS" if s.tls_client_ca_file else "TLS")
        log.info("%s listening on %s:%d (profile=%s, tls=%s)", self.spec.name, s.host, self.port, s.profile, tls)
        self._load_task = asyncio.create_task(self._load(), name=f"{self.spec.name}-load")
        return self.port

    async def _load(self) -> None:
        try:
            await self.spec.load()
        except Exception as exc:
            log.exception("%s failed to load its models", self.spec.name)
            self.load_error = exc
            self.ready.set()
            return
        if not self._stopping:
            await self._set_health(True)
            log.info("%s is SERVING", self.spec.name)
        self.ready.set()

    async def wait_ready(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self.ready.wait(), timeout)
        if self.load_error is not None:
            raise RuntimeError(f"{self.spec.name} failed to load") from self.load_error

    async def stop(self, grace: float | None = None) -> None:
        if self._stopping:
            return
        self._stopping = True
        grace = self.settings.grace_period_s if grace is None else grace
        await self._health.enter_graceful_shutdown()
        metrics.MODEL_READY.set(0)
        log.info("%s shutting down: NOT_SERVING, draining for up to %.1fs", self.spec.name, grace)
        # Still accepting calls: health Checks see NOT_SERVING and load balancers stop sending.
        # Watchers have been sent NOT_SERVING; after at least a moment for it to go out their
        # streams end, or they would hold the drain for the whole grace period.
        await asyncio.sleep(max(self.settings.drain_delay_s, 0.1))
        self._interceptor.end_watches()
        if self._server is not None:
            await self._server.stop(grace)
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._load_task
        await self.spec.unload()
        log.info("%s stopped", self.spec.name)


async def serve(spec: ServiceSpec, settings: ServerSettings, port_file: Path | None = None) -> int:
    """Run until SIGTERM/SIGINT. Returns the process exit code."""
    metrics.start_metrics_server(settings.metrics_port)
    server = ModaverseServer(spec, settings)
    port = await server.start()
    if port_file is not None:
        await asyncio.to_thread(port_file.write_text, str(port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready_wait = asyncio.create_task(server.ready.wait())
    stop_wait = asyncio.create_task(stop.wait())
    await asyncio.wait({ready_wait, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    if server.load_error is not None:
        await server.stop(grace=0)
        return 1
    await stop_wait
    await server.stop()
    ready_wait.cancel()
    return 0

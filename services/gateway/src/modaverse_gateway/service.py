"""Wiring: settings → routing table → backends → orchestrator → servicer → shared lifecycle."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from grpc import aio

from modaverse_protos.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from modaverse_protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from modaverse_protos.llm.v1 import llm_pb2, llm_pb2_grpc
from modaverse_runtime.server import ServiceSpec

from .backends import Backends
from .orchestrator import ChatOrchestrator
from .routes import RoutingTable, load_routes
from .routes_watch import RoutesWatcher
from .servicer import GatewayServicer
from .settings import GatewaySettings

if TYPE_CHECKING:
    from .kube_discovery import KubernetesDiscovery

SERVICE_NAME: str = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name
log = logging.getLogger(__name__)


def make_spec(settings: GatewaySettings) -> ServiceSpec:
    routes = RoutingTable()
    backends = Backends(settings, routes)
    names: dict[str, str] = {}
    servicer = GatewayServicer(ChatOrchestrator(settings, backends, routes), backends, routes, names)
    watcher = RoutesWatcher(settings.routes_file, routes, backends, settings.routes_reload_s)
    discovery: list[KubernetesDiscovery] = []  # discovery=kubernetes: made in load(), so a bad config fails it

    async def load() -> None:
        seen = watcher.stamp()
        table = await asyncio.to_thread(load_routes, settings.routes_file, settings.routes)
        routes.routes.update(table.routes)
        backends.add_routes(table)
        log.info("routes: %s", ", ".join(f"{r.name}({r.modality})" for r in table.routes.values()) or "none")
        watcher.start(seen)  # a changed routing file is applied without a restart (routes_watch.py)
        if settings.discovery == "kubernetes":
            from .kube_discovery import KubernetesDiscovery  # imports the kubernetes client: only in this mode

            discovery.append(KubernetesDiscovery.from_settings(settings.kubeconfig, settings.default_deadline_s))
            await discovery[0].start(lambda: [backends.encoder, backends.llm, *backends.generators.values()])
        names.update(await _model_names(backends))

    async def unload() -> None:
        await watcher.stop()
        for kube in discovery:
            await kube.close()
        await backends.close()

    def register(server: aio.Server) -> None:
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)

    return ServiceSpec("gateway", [SERVICE_NAME], register, load, unload)


async def _model_names(backends: Backends) -> dict[str, str]:
    """Best effort: the gateway starts even when its backends are not up yet."""
    names: dict[str, str] = {}
    try:
        reply = await backends.encoder.call(
            lambda r: encoder_pb2_grpc.EncoderServiceStub(r.channel).Info(
                encoder_pb2.InfoRequest(), timeout=2.0, metadata=backends.metadata()
            ),
            deadline=time.monotonic() + 2.0,  # no long wait for a busy backend at start
        )
        names["encoder"] = reply.encoder_model
    except Exception:
        log.info("encoder not reachable yet; ListModels will not name it")
    try:
        llm = await backends.llm.call(
            lambda r: llm_pb2_grpc.LLMServiceStub(r.channel).Info(
                llm_pb2.InfoRequest(), timeout=2.0, metadata=backends.metadata()
            ),
            deadline=time.monotonic() + 2.0,
        )
        names["llm"] = llm.model
    except Exception:
        log.info("llm not reachable yet; ListModels will not name it")
    return names

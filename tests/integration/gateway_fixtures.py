"""An in-process gateway on loopback over given encoder, LLM and generator targets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from modaverse_gateway.service import make_spec
from modaverse_gateway.settings import GatewaySettings
from modaverse_runtime.server import ModaverseServer

from .in_process import start_server


def tiny_routes(generators: Mapping[str, str]) -> str:
    """The routing table: per modality one default route named ``<modality>-tiny`` to its target."""
    routes = {f"{m}-tiny": {"modality": m, "endpoints": [t], "default": True} for m, t in generators.items()}
    return json.dumps({"generators": routes})


async def start_gateway(
    encoder: str, llm: str, generators: Mapping[str, str] | None = None, **overrides: Any
) -> ModaverseServer:
    settings = GatewaySettings(
        host="127.0.0.1",
        port=0,
        encoder_targets=encoder,
        llm_targets=llm,
        routes=tiny_routes(generators or {}),
        **overrides,
    )
    return await start_server(make_spec(settings), settings, ready_timeout=60)

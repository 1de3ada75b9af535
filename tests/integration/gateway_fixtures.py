"""An in-process gateway on loopback over given encoder, LLM and generator targets, and the in-process
services it usually calls."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modaverse_gateway.service import make_spec
from modaverse_gateway.settings import GatewaySettings
from modaverse_runtime.server import ModaverseServer

from .encoder_fixtures import RunningEncoder, start_encoder
from .generator_fixtures import RunningGenerator, start_generator
from .in_process import start_server
from .scripted_llm import ScriptedLLM, start_scripted_llm


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


@dataclass
class Backends:
    """What a gateway calls, in-process on the tiny profile: the real encoder and image, video and audio
    generators, and the scripted LLM, so a test chooses the meta-response by writing it."""

    encoder: RunningEncoder
    llm_server: ModaverseServer
    llm: ScriptedLLM
    generators: dict[str, RunningGenerator]

    @property
    def llm_target(self) -> str:
        return f"127.0.0.1:{self.llm_server.port}"

    def generator_targets(self) -> dict[str, str]:
        return {modality: gen.target for modality, gen in self.generators.items()}

    async def stop_backends(self) -> None:
        for gen in self.generators.values():
            await gen.stop()
        await self.llm_server.stop(1)
        await self.encoder.stop()


async def start_backends(model_dir: Path) -> Backends:
    encoder = await start_encoder(model_dir)
    llm_server, llm = await start_scripted_llm()
    generators = {m: await start_generator(model_dir, f"text-to-{m}") for m in ("image", "video", "audio")}
    return Backends(encoder, llm_server, llm, generators)

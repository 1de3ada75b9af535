"""A running gateway follows its routing file (MODAVERSE_ROUTES_FILE): no restart, real generators.

Two real tiny image generators on loopback; the file is laid out and updated as the kubelet does for a mounted
ConfigMap (a new folder, then a ``..data`` symlink renamed over the old one). The gateway looks every 0.1 s here
(MODAVERSE_ROUTES_RELOAD_S, 2 s by default). Its encoder target is dead: no chat here sends media.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image
from prometheus_client import REGISTRY

from modaverse import AsyncClient, GenerationOptions
from modaverse.types import ChatEvent, ChatResult, Done, InvocationDone, InvocationStarted, MediaChunk, Progress
from modaverse_gateway.service import make_spec
from modaverse_gateway.settings import GatewaySettings
from modaverse_runtime.server import ModaverseServer

from .generator_fixtures import RunningGenerator, start_generator
from .in_process import start_server
from .scripted_llm import start_scripted_llm

pytestmark = pytest.mark.asyncio(loop_scope="module")

DEAD = "127.0.0.1:1"
FAST = {"image": GenerationOptions(steps=2)}
RELOAD_S = 0.1
PICKED_UP_S = 5.0  # a change must route new chats within this (it takes about RELOAD_S)


@dataclass
class World:
    llm: str
    first: RunningGenerator
    second: RunningGenerator


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(model_dir: Path) -> AsyncIterator[World]:
    llm_server, _ = await start_scripted_llm()
    first = await start_generator(model_dir, "text-to-image")
    second = await start_generator(model_dir, "text-to-image")
    yield World(f"127.0.0.1:{llm_server.port}", first, second)
    for gen in (first, second):
        await gen.stop()
    await llm_server.stop(1)


class Mounted:
    """``routes.yaml`` → ``..data/routes.yaml``, ``..data`` → a timestamped folder, swapped as the kubelet does."""

    def __init__(self, root: Path, generators: dict[str, Any]) -> None:
        self.root, self.versions = root, 0
        self.write(generators)
        (root / "routes.yaml").symlink_to("..data/routes.yaml")

    @property
    def path(self) -> Path:
        return self.root / "routes.yaml"

    def write(self, generators: dict[str, Any] | str) -> None:
        self.versions += 1
        folder = self.root / f"..2025_06_01_12_00_{self.versions:02d}.{os.getpid()}"
        folder.mkdir()
        text = generators if isinstance(generators, str) else json.dumps({"generators": generators})
        (folder / "routes.yaml").write_text(text)
        (self.root / "..data_tmp").symlink_to(folder.name)
        os.replace(self.root / "..data_tmp", self.root / "..data")


def image_route(gen: RunningGenerator, default: bool) -> dict[str, Any]:
    return {"modality": "image", "endpoints": [gen.target], "default": default}


def reloads(result: str) -> float:
    return REGISTRY.get_sample_value("modaverse_gateway_routes_reloads_total", {"result": result}) or 0.0


@pytest_asyncio.fixture(loop_scope="module")
async def mounted(world: World, tmp_path: Path) -> Mounted:
    return Mounted(tmp_path, {"sd15": image_route(world.first, True)})


@pytest_asyncio.fixture(loop_scope="module")
async def gateway(world: World, mounted: Mounted) -> AsyncIterator[tuple[ModaverseServer, AsyncClient]]:
    settings = GatewaySettings(
        host="127.0.0.1",
        port=0,
        encoder_targets=DEAD,
        llm_targets=world.llm,
        routes_file=mounted.path,
        routes_reload_s=RELOAD_S,
    )
    server = await start_server(make_spec(settings), settings, ready_timeout=60)
    client = AsyncClient(f"127.0.0.1:{server.port}", timeout=120)
    yield server, client
    await client.close()
    await server.stop(1)


async def routed_to(client: AsyncClient, text: str = "Modality: [IMAGE] Prompt: a red circle") -> str:
    """The route the gateway picks for ``text`` now (the meta-response names it; no generator is called)."""
    result = await client.chat(text, meta_response_only=True)
    assert result.meta_response is not None
    (invocation,) = result.meta_response.invocations
    return invocation.model


async def wait_until(predicate: Any, timeout: float = PICKED_UP_S) -> float:
    """Await ``predicate()`` until true; the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await predicate():
        assert loop.time() - start < timeout, f"not within {timeout} s"
        await asyncio.sleep(0.02)
    return loop.time() - start


def png(result: ChatResult) -> Image.Image:
    (media,) = result.media
    image = Image.open(io.BytesIO(media.data))
    image.load()
    return image


async def test_a_swapped_routing_file_sends_new_chats_to_the_new_generator_without_a_restart(
    world: World, mounted: Mounted, gateway: tuple[ModaverseServer, AsyncClient]
) -> None:
    server, client = gateway
    first, second = world.first.generator.stats, world.second.generator.stats
    rows = (first.rows, second.rows)
    before = await client.chat("Modality: [IMAGE] Prompt: a red circle", generators=FAST)
    assert before.media[0].invocation.model == "sd15" and png(before).format == "PNG"
    assert (first.rows, second.rows) == (rows[0] + 1, rows[1])
    ok, port = reloads("ok"), server.port

    # As values-swap-image.yaml does: sdxl (the second generator) becomes the default; sd15 stays by name.
    mounted.write({"sd15": image_route(world.first, False), "sdxl": image_route(world.second, True)})
    took = await wait_until(lambda: _is(routed_to(client), "sdxl"))
    assert took < PICKED_UP_S
    after = await client.chat("Modality: [IMAGE] Prompt: a blue square", generators=FAST)
    assert after.media[0].invocation.model == "sdxl" and png(after).format == "PNG"
    assert (first.rows, second.rows) == (rows[0] + 1, rows[1] + 1)  # the second generator made it
    by_name = await client.chat("Modality: [IMAGE] Model: sd15 Prompt: a green star", generators=FAST)
    assert by_name.media[0].invocation.model == "sd15" and png(by_name).format == "PNG"
    assert (first.rows, second.rows) == (rows[0] + 2, rows[1] + 1)
    models = {m.model: m for m in await client.list_models()}
    assert (models["sdxl"].is_default, models["sd15"].is_default) == (True, False)
    assert models["sdxl"].endpoints == [world.second.target] and models["sdxl"].healthy
    # Applied once, by the server that was running all along (same port, same client connection).
    assert reloads("ok") == ok + 1 and server.port == port


async def test_an_invalid_routing_file_keeps_the_routes_in_force(
    world: World,
    mounted: Mounted,
    gateway: tuple[ModaverseServer, AsyncClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, client = gateway
    errors, ok = reloads("error"), reloads("ok")
    # Two defaults for image: the table is refused as a whole, not applied in part.
    with caplog.at_level(logging.ERROR, logger="modaverse_gateway.routes_watch"):
        mounted.write({"sd15": image_route(world.first, True), "sdxl": image_route(world.second, True)})
        await wait_until(lambda: _true(reloads("error") > errors))
        await asyncio.sleep(5 * RELOAD_S)  # several more looks: the same file is not reported again
    (record,) = [r for r in caplog.records if r.name == "modaverse_gateway.routes_watch"]
    assert "several default image generators" in record.getMessage()
    assert "keeping the routes in force: sd15(image, default)" in record.getMessage()
    assert (reloads("error"), reloads("ok")) == (errors + 1, ok)
    rows = world.first.generator.stats.rows
    result = await client.chat("Modality: [IMAGE] Prompt: a red circle", generators=FAST)
    assert result.media[0].invocation.model == "sd15" and world.first.generator.stats.rows == rows + 1
    assert [m.model for m in await client.list_models()] == ["sd15"]
    # Not YAML at all: refused too. Then a good file is applied.
    mounted.write("generators: {sdxl: [")
    await wait_until(lambda: _true(reloads("error") > errors + 1))
    assert await routed_to(client) == "sd15"
    mounted.write({"sdxl": image_route(world.second, True)})
    await wait_until(lambda: _is(routed_to(client), "sdxl"))


async def test_a_generation_in_flight_finishes_on_the_generator_it_started_on(
    world: World,
    mounted: Mounted,
    gateway: tuple[ModaverseServer, AsyncClient],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """sd15 is re-pointed from the first generator to the second while a generation is in flight on the first (held
    there, between its last denoising step and its file, until the test lets it go): it finishes there, its
    connection is closed only after that, and the next generation goes to the second."""
    _, client = gateway
    gate = threading.Event()
    encode = world.first.generator.encode

    def held(row: Any, params: Any) -> Any:  # runs on a worker thread, not the event loop
        gate.wait(timeout=60)
        return encode(row, params)

    monkeypatch.setattr(world.first.generator, "encode", held)
    ok = reloads("ok")
    closed = f"closed the connections of generator sd15 ({world.first.target})"
    events: list[ChatEvent] = []
    stream = client.generate_stream("image", "a long walk", options=GenerationOptions(model="sd15", steps=2))
    try:
        with caplog.at_level(logging.INFO, logger="modaverse_gateway.routes_watch"):
            async for event in stream:
                events.append(event)
                if isinstance(event, Progress):
                    break  # the first generator is at work
            mounted.write({"sd15": image_route(world.second, True)})
            await wait_until(lambda: _true(reloads("ok") > ok))
            await asyncio.sleep(3 * RELOAD_S)  # past the retired set's first wait: it waits for the call now
            assert closed not in caplog.text
            gate.set()
            async for event in stream:
                events.append(event)
            await wait_until(lambda: _true(closed in caplog.text))
    finally:
        gate.set()
    started, done = events[0], events[-1]
    assert isinstance(started, InvocationStarted) and started.endpoint == world.first.target
    assert isinstance(done, Done) and any(isinstance(e, InvocationDone) for e in events)
    assert Image.open(io.BytesIO(b"".join(e.data for e in events if isinstance(e, MediaChunk)))).format == "PNG"
    again = [e async for e in client.generate_stream("image", "a short walk", options=GenerationOptions(steps=2))]
    assert isinstance(again[0], InvocationStarted) and again[0].endpoint == world.second.target


async def _is(value: Any, expected: str) -> bool:
    return bool(await value == expected)


async def _true(value: bool) -> bool:
    return value

"""The web front door in-process on a loopback port (real uvicorn), over a real tiny stack.

Encoder, generators and gateway are the real services on the tiny profile; the LLM is the scripted
test server (tests/integration/scripted_llm.py), so a test chooses the meta-response by writing it:
``Modality: [IMAGE] Prompt: a red circle`` makes a real tiny diffusers pipeline draw an image.
Everything runs on one event loop in a background thread, so tests are plain blocking code (the
``openai`` package, Selenium, httpx).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modaverse_runtime.server import ModaverseServer
from modaverse_web.app import WebState, create_app
from modaverse_web.server import WebServer, bind, uvicorn_config
from modaverse_web.settings import WebSettings
from tests.integration import gateway_fixtures
from tests.integration.in_process import BackgroundLoop


@dataclass
class RunningWeb:
    server: WebServer
    task: asyncio.Future[None]
    port: int
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def state(self) -> WebState:
        return self.server.state

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


async def start_web(settings: WebSettings) -> RunningWeb:
    app = create_app(settings)
    sock = bind("127.0.0.1", 0)
    server = WebServer(uvicorn_config(app, settings), app.state.web)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
        await asyncio.sleep(0.01)
    return RunningWeb(server, task, sock.getsockname()[1], "https" if settings.tls_cert_file else "http")


def web_settings(gateway: str, **overrides: Any) -> WebSettings:
    defaults = {"host": "127.0.0.1", "port": 0, "gateway": gateway, "request_timeout_s": 120, "grace_period_s": 5}
    return WebSettings(**{**defaults, **overrides})


@dataclass
class Stack(gateway_fixtures.Backends):
    loop: BackgroundLoop
    gateway: ModaverseServer
    web: RunningWeb
    extra: list[RunningWeb] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.web.url

    @property
    def gateway_target(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"

    def start_web(self, **overrides: Any) -> RunningWeb:
        """Another web front door (other settings) on the same gateway, stopped with the stack."""
        web = self.loop.run(start_web(web_settings(overrides.pop("gateway", self.gateway_target), **overrides)))
        self.extra.append(web)
        return web


async def start_stack(loop: BackgroundLoop, model_dir: Path) -> Stack:
    backends = await gateway_fixtures.start_backends(model_dir)
    gateway = await gateway_fixtures.start_gateway(
        backends.encoder.target, backends.llm_target, backends.generator_targets(), retry_backoff_ms=10
    )
    web = await start_web(web_settings(f"127.0.0.1:{gateway.port}", max_media_items=4, max_parts=8))
    return Stack(**vars(backends), loop=loop, gateway=gateway, web=web)


async def stop_stack(stack: Stack) -> None:
    for web in [stack.web, *stack.extra]:
        await web.stop()
    await stack.gateway.stop(1)
    await stack.stop_backends()

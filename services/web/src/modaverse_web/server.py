"""Running the app under uvicorn, with the same lifecycle as every ModaVerse server.

SIGTERM: ``/readyz`` turns 503 at once (load balancers stop sending) while calls are still
accepted for ``drain_delay_s``; then the port closes and in-flight calls (streams included) get
``grace_period_s`` to finish before they are cancelled. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from modaverse_runtime.metrics import start_metrics_server

from . import metrics
from .app import WebState, create_app
from .settings import WebSettings

log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only for that protocol, and
    # without it a kept-alive response (head and body written apart) waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def uvicorn_config(app: FastAPI, settings: WebSettings) -> uvicorn.Config:
    tls: dict[str, object] = {}
    if settings.tls_cert_file is not None:
        tls = {"ssl_certfile": str(settings.tls_cert_file), "ssl_keyfile": str(settings.tls_key_file)}
        if settings.tls_client_ca_file is not None:
            tls |= {"ssl_ca_certs": str(settings.tls_client_ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return uvicorn.Config(
        app,
        log_config=None,  # our logging (configure_logging), uvicorn's loggers propagate to it
        access_log=False,  # requests are counted in the metrics instead
        timeout_graceful_shutdown=int(settings.grace_period_s) or 1,
        timeout_keep_alive=30,
        h11_max_incomplete_event_size=64 * 1024,
        server_header=False,
        **tls,  # type: ignore[arg-type]
    )


class WebServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: WebState) -> None:
        super().__init__(config)
        self.state = state
        self.bound_port = 0

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.begin_drain)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def begin_drain(self) -> None:
        """Not ready at once; stop accepting after the drain delay (a second call: exit now)."""
        if self.state.draining:
            self.should_exit = self.force_exit = True
            return
        self.state.draining = True
        metrics.READY.set(0)
        delay = self.state.settings.drain_delay_s
        log.info("draining: /readyz is 503; closing the port in %.1fs, then up to %.1fs for in-flight calls",
                 delay, self.state.settings.grace_period_s)  # fmt: skip
        asyncio.get_running_loop().call_later(delay, self._exit)

    def _exit(self) -> None:
        self.should_exit = True


async def serve(settings: WebSettings, port_file: Path | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    start_metrics_server(settings.metrics_port)
    app = create_app(settings)
    sock = bind(settings.host, settings.port)
    server = WebServer(uvicorn_config(app, settings), app.state.web)
    server.bound_port = sock.getsockname()[1]
    scheme = "https" if settings.tls_cert_file else "http"
    log.info("web listening on %s://%s:%d, gateway %s", scheme, settings.host, server.bound_port, settings.gateway)
    if port_file is not None:
        await asyncio.to_thread(port_file.write_text, str(server.bound_port))
    await server.serve(sockets=[sock])
    log.info("web stopped")
    return 0

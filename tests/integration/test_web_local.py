"""The local stack's web front door as a real ``modaverse-web serve`` process (what ``modaverse up`` and
``make demo`` start), in front of a real gateway on loopback: ready on ``/readyz``, the playground at ``/``, the
API answering from that gateway, a clean SIGTERM exit; and a port that is taken reported, not fatal."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from modaverse.stack import start_web
from modaverse_runtime.server import ModaverseServer

from . import gateway_fixtures
from .in_process import BackgroundLoop, free_port

# No proxy: the services are on this machine.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def gateway() -> Iterator[ModaverseServer]:
    """A real gateway whose backends are not running: enough for its routing table (ListModels)."""
    loop = BackgroundLoop()
    unreachable = f"127.0.0.1:{free_port()}"
    server = loop.run(gateway_fixtures.start_gateway(unreachable, unreachable, {"image": unreachable}), timeout=90)
    yield server
    loop.run(server.stop(1))


def test_web_process_serves_the_playground_over_the_local_gateway(gateway: ModaverseServer, tmp_path: Path) -> None:
    web, skipped = start_web(f"127.0.0.1:{gateway.port}", 0, tmp_path)
    assert skipped == "" and web is not None, skipped
    try:
        assert web.port > 0 and web.url == f"http://127.0.0.1:{web.port}/"
        with HTTP.open(web.url, timeout=10) as page:
            assert page.status == 200 and page.headers["content-type"].startswith("text/html")
        with HTTP.open(web.url + "v1/models", timeout=30) as reply:
            models = json.loads(reply.read())
        # the gateway's routing table, through the web process: it is pointed at this gateway
        assert "image:image-tiny" in {m["id"] for m in models["data"]}
    finally:
        assert web.stop() == 0  # SIGTERM: drain, then a clean exit
    assert (tmp_path / "web.log").is_file()


def test_a_taken_port_is_reported_and_leaves_nothing_running(gateway: ModaverseServer, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        web, skipped = start_web(f"127.0.0.1:{gateway.port}", port, tmp_path, timeout=60)
    assert web is None
    assert skipped == f"it did not start (OSError: [Errno 98] Address already in use; see {tmp_path / 'web.log'})"

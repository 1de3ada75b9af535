"""``modaverse-web serve --port 8080 --gateway HOST:PORT``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from modaverse_runtime.logs import configure_logging

from .settings import WebSettings

_FLAGS = ("host", "port", "metrics_port", "gateway", "public_url")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="modaverse-web", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the HTTP API and the playground")
    serve.add_argument("--host", help="bind address (MODAVERSE_HOST)")
    serve.add_argument("--port", type=int, help="HTTP port, 0 = any free one (MODAVERSE_PORT)")
    serve.add_argument("--metrics-port", type=int, help="extra Prometheus port, 0 = off (MODAVERSE_METRICS_PORT)")
    serve.add_argument("--gateway", help="the gateway's HOST:PORT (MODAVERSE_GATEWAY)")
    serve.add_argument("--public-url", help="base URL for file links (MODAVERSE_PUBLIC_URL)")
    serve.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    return root


def settings_from_args(args: argparse.Namespace) -> WebSettings:
    """Environment first, then explicit flags on top."""
    overrides: dict[str, Any] = {key: getattr(args, key) for key in _FLAGS if getattr(args, key, None) is not None}
    return WebSettings(**overrides)


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    settings = settings_from_args(args)
    configure_logging(settings.log_level, settings.log_json, service="modaverse-web")
    from .server import serve  # after logging is set up

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            sys.exit(runner.run(serve(settings, args.port_file)))
    except KeyboardInterrupt:
        sys.exit(130)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (a dependency off Windows): a cheaper loop for every call."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop

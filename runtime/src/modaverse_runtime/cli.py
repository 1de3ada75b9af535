"""The command line every service shares: ``modaverse-<service> serve --port N``."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .logs import configure_logging
from .server import ServiceSpec, serve
from .settings import ServerSettings

S = TypeVar("S", bound=ServerSettings)

Command = Callable[[argparse.Namespace], int]


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (MODAVERSE_HOST)")
    parser.add_argument("--port", type=int, help="gRPC port, 0 = any free one (MODAVERSE_PORT)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port, 0 = off (MODAVERSE_METRICS_PORT)")
    parser.add_argument("--profile", choices=["tiny", "full"], help="model profile (MODAVERSE_PROFILE)")
    parser.add_argument("--model-dir", type=Path, help="where tiny models live (MODAVERSE_MODEL_DIR)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once listening")


def settings_from_args(settings_cls: type[S], args: argparse.Namespace) -> S:
    """Environment first, then explicit flags on top."""
    overrides: dict[str, Any] = {
        key: getattr(args, key)
        for key in ("host", "port", "metrics_port", "profile", "model_dir")
        if getattr(args, key, None) is not None
    }
    return settings_cls(**overrides)


def run_service_cli(
    prog: str,
    settings_cls: type[S],
    make_spec: Callable[[S], ServiceSpec],
    extra_commands: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Command]] | None = None,
    argv: Sequence[str] | None = None,
) -> int:
    parser = argparse.ArgumentParser(prog=prog)
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve", help="run the gRPC server")
    add_serve_arguments(serve_parser)
    handlers: dict[str, Command] = {}
    for name, (help_text, configure, handler) in (extra_commands or {}).items():
        configure(sub.add_parser(name, help=help_text))
        handlers[name] = handler
    args = parser.parse_args(argv)
    if args.command != "serve":
        configure_logging("INFO", service=prog)
        return handlers[args.command](args)
    settings = settings_from_args(settings_cls, args)
    configure_logging(settings.log_level, settings.log_json, service=prog)
    spec = make_spec(settings)
    try:
        return asyncio.run(serve(spec, settings, args.port_file))
    except KeyboardInterrupt:
        return 130

"""``modaverse-generator``: ``serve`` (the gRPC server) and ``build-tiny`` (tiny pipelines)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from modaverse_runtime.cli import run_service_cli

from .service import make_spec
from .settings import GeneratorSettings
from .tiny import BUILDERS, ensure_tiny_generator


def _configure_build(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", type=Path, default=None, help="default: MODAVERSE_MODEL_DIR or ~/.cache")
    parser.add_argument(
        "--kind", action="append", choices=sorted(BUILDERS), help="generator kind (repeatable); default: all"
    )


def _build_tiny(args: argparse.Namespace) -> int:
    model_dir = args.model_dir or GeneratorSettings().model_dir
    for kind in args.kind or sorted(BUILDERS):
        print(ensure_tiny_generator(model_dir, kind))
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(
        run_service_cli(
            "modaverse-generator",
            GeneratorSettings,
            make_spec,
            {"build-tiny": ("build the tiny profile's pipelines", _configure_build, _build_tiny)},
            argv,
        )
    )

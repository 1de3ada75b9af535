"""``modaverse-encoder``: ``serve`` (the gRPC server) and ``build-tiny`` (tiny artifacts)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from modaverse_runtime.cli import run_service_cli
from modaverse_runtime.settings import default_model_dir

from .architectures import ARCHITECTURES
from .service import make_spec
from .settings import EncoderSettings
from .tiny import build_random_encoder, ensure_tiny_encoder


def _configure_build(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", type=Path, default=None, help="default: MODAVERSE_MODEL_DIR or ~/.cache")


def _build_tiny(args: argparse.Namespace) -> int:
    model_dir = args.model_dir or EncoderSettings().model_dir or default_model_dir()
    print(ensure_tiny_encoder(model_dir))
    return 0


def _configure_random(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder to write imagebind/ and adaptor/ into")
    parser.add_argument("--arch", default="imagebind_huge", choices=sorted(ARCHITECTURES))
    parser.add_argument("--hidden-size", type=int, default=4096, help="LLM hidden size (Vicuna-7B: 4096)")
    parser.add_argument("--adaptor-mode", default="shared", choices=["shared", "per_modality"])
    parser.add_argument("--device", default="cpu", help="where to initialise (cuda is much faster for huge)")
    parser.add_argument("--seed", type=int, default=0)


def _build_random(args: argparse.Namespace) -> int:
    build_random_encoder(args.out, args.arch, args.hidden_size, args.seed, args.device, args.adaptor_mode)
    print(args.out)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(
        run_service_cli(
            "modaverse-encoder",
            EncoderSettings,
            make_spec,
            {
                "build-tiny": ("build the tiny profile's artifacts", _configure_build, _build_tiny),
                "build-random": (
                    "random-weight artifacts of any size (GPU memory/speed checks)",
                    _configure_random,
                    _build_random,
                ),
            },
            argv,
        )
    )

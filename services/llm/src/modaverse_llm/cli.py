"""``modaverse-llm``: ``serve``, ``build-tiny`` (tiny artifacts) and ``convert-release``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from modaverse_runtime.cli import run_service_cli
from modaverse_runtime.settings import default_model_dir

from .service import make_spec
from .settings import LLMSettings


def _configure_build(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", type=Path, default=None, help="default: MODAVERSE_MODEL_DIR or ~/.cache")


def _build_tiny(args: argparse.Namespace) -> int:
    from .tiny import ensure_tiny_llm

    print(ensure_tiny_llm(args.model_dir or LLMSettings().model_dir or default_model_dir()))
    return 0


def _configure_convert(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--release", type=Path, required=True, help="release folder (pytorch_model.pt, tokenizer)")
    parser.add_argument("--base", type=Path, required=True, help="Vicuna-7B v0 folder (HF layout)")
    parser.add_argument("--out", type=Path, required=True, help="writes base/, adapters/default/ and adaptor/")


def _convert(args: argparse.Namespace) -> int:
    from .release import convert_release

    print(convert_release(args.release, args.base, args.out))
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(
        run_service_cli(
            "modaverse-llm",
            LLMSettings,
            make_spec,
            {
                "build-tiny": ("build the tiny profile's artifacts", _configure_build, _build_tiny),
                "convert-release": ("import the released ModaVerse checkpoint", _configure_convert, _convert),
            },
            argv,
        )
    )

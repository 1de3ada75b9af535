"""``modaverse-llm``: ``serve``, ``build-tiny`` (tiny artifacts), and the release's tools:
``apply-delta``, ``convert-release``, ``verify-release`` and ``render-prompt`` (docs/release.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from modaverse_runtime.cli import run_service_cli
from modaverse_runtime.errors import ModaverseError
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


# What the release tools refuse with a message (bad folders, mismatched parts) rather than a traceback.
_REFUSALS = (FileExistsError, FileNotFoundError, ValueError, ModaverseError)


def _refused(command: str, exc: BaseException) -> int:
    print(f"modaverse-llm {command}: error: {exc}", file=sys.stderr)
    return 1


def _convert(args: argparse.Namespace) -> int:
    from .release import convert_release

    try:
        print(convert_release(args.release, args.base, args.out))
    except _REFUSALS as exc:
        return _refused("convert-release", exc)
    return 0


def _configure_apply_delta(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", type=Path, required=True, help="the base model folder (LLaMA-7B, HF layout)")
    parser.add_argument("--delta", type=Path, required=True, help="the delta folder (lmsys/vicuna-7b-delta-v0)")
    parser.add_argument("--out", type=Path, required=True, help="new folder for base + delta (safetensors)")


def _apply_delta(args: argparse.Namespace) -> int:
    from .delta import apply_delta

    try:
        out = apply_delta(args.base, args.delta, args.out, progress=lambda line: print(line, file=sys.stderr))
    except _REFUSALS as exc:
        return _refused("apply-delta", exc)
    print(out)
    return 0


def _configure_verify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", type=Path, help="the folder convert-release wrote")
    parser.add_argument("--prompt", default="What is in this image?", help="the instruction of the test prompt")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, …")
    parser.add_argument("--max-tokens", type=int, default=48)


def _verify(args: argparse.Namespace) -> int:
    from .inspection import verify_release

    print(f"verify-release {args.root}")
    try:
        report = verify_release(args.root, args.prompt, args.device, args.max_tokens)
    except _REFUSALS as exc:
        return _refused("verify-release", exc)
    print("\n".join(report.lines))
    print(f"{len(report.problems)} problem(s)" if report.problems else "the release is ready to serve")
    return 1 if report.problems else 0


def _configure_render(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", help="a running LLM service, HOST:PORT (plaintext; uses its RenderPrompt RPC)")
    where.add_argument("--model", type=Path, help="offline: a model folder (only its tokenizer is read)")
    parser.add_argument("text", nargs="?", default="", help="the instruction")
    parser.add_argument(
        "--media", action="append", default=[], choices=["image", "audio", "video"], help="a media item (repeatable)"
    )
    parser.add_argument("--context-length", type=int, default=2048, help="offline only")
    parser.add_argument("--max-tokens", type=int, default=246, help="reserved for the answer (drives truncation)")
    parser.add_argument("--json", action="store_true", help="print the RenderPromptResponse as JSON")


def _render(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToJson

    from .inspection import describe, offline_render, remote_render

    try:
        if args.model:
            rendered = offline_render(args.model, args.text, args.media, args.context_length, args.max_tokens)
        else:
            rendered = remote_render(args.target, args.text, args.media, args.max_tokens)
    except _REFUSALS as exc:
        return _refused("render-prompt", exc)
    print(MessageToJson(rendered) if args.json else describe(rendered))
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
                "apply-delta": ("make Vicuna weights: base + delta", _configure_apply_delta, _apply_delta),
                "verify-release": ("check a converted release and answer one prompt", _configure_verify, _verify),
                "render-prompt": ("show exactly what the model sees for a message", _configure_render, _render),
            },
            argv,
        )
    )

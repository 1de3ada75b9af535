"""``make eval-tiny``: the local tiny stack, ``modaverse eval`` on the trained tiny model's test benchmark, stop.

The benchmark is ``<model dir>/tiny/eval/shapes-test.jsonl`` (``MODAVERSE_MODEL_DIR``, else the tiny profile's
default model dir), which ``make tiny-model`` writes beside the exported model. The stack is every service as
its own process on free loopback ports (the SDK's local stack, as ``modaverse up`` runs it, without the web
front door); it stops when the evaluation ends, Ctrl-C included. Options after ``--`` go to ``modaverse eval``:

    python eval/run_tiny.py --out eval-out/tiny -- --limit 10 --concurrency 2
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from modaverse.cli import main as modaverse
from modaverse.evaluation import DataError, load_records
from modaverse.stack import local_stack
from modaverse_runtime.settings import default_model_dir

ROOT = Path(__file__).resolve().parent.parent
BENCHMARK = Path("tiny") / "eval" / "shapes-test.jsonl"


def benchmark_file() -> Path:
    return Path(os.environ.get("MODAVERSE_MODEL_DIR") or default_model_dir()) / BENCHMARK


def _interrupt_on_sigterm() -> None:
    """SIGTERM (a CI job cancelled, ``kill``) stops the evaluation like Ctrl-C, so the stack's services stop too
    instead of outliving this process; SIGINT is restored in case a background launch ignored it."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help=f"benchmark file (default: <model dir>/{BENCHMARK})")
    parser.add_argument("--out", type=Path, default=ROOT / "eval-out" / "tiny")
    parser.add_argument("eval_args", nargs="*", help="more options of `modaverse eval` (after --)")
    args = parser.parse_args(argv)
    data: Path = args.data or benchmark_file()
    if not data.is_file():
        print(f"error: {data} not found: run make tiny-model first", file=sys.stderr)
        return 2
    try:
        load_records(data)  # a bad file is reported before anything starts
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _interrupt_on_sigterm()
    started = time.perf_counter()
    print("starting the tiny stack (encoder, llm, generators, gateway) ...", file=sys.stderr, flush=True)
    with local_stack(profile="tiny", log_dir=ROOT / ".modaverse" / "logs", web_port=None) as stack:
        print(f"gateway SERVING on {stack.target} after {time.perf_counter() - started:.0f}s", file=sys.stderr)
        try:
            modaverse(["eval", str(data), "--target", stack.target, "--out", str(args.out), *args.eval_args])
        except SystemExit as exit_:
            code = exit_.code
        else:
            code = 0
    print("the tiny stack stopped", file=sys.stderr)
    return code if isinstance(code, int) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The ``modaverse`` command: ``chat``, ``generate``, ``models``, ``up`` (the local stack), ``encode``,
``cluster`` (a Helm release on Kubernetes: cluster.py) and ``eval`` (a benchmark through a gateway: evaluation/).

The commands that call a gateway take ``--tls``, ``--ca PATH`` and ``--token TOKEN``, or the environment
variables ``MODAVERSE_TLS``, ``MODAVERSE_CA`` and ``MODAVERSE_TOKEN`` (a token there stays out of the process
list); a flag wins over its variable."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from .chat import GenerationOptions, ResultBuilder
from .client import DEFAULT_RETRY, AsyncClient, Client
from .cluster import add_parser as add_cluster_parser
from .encoder import EncoderClient, media_from_file
from .errors import ModaverseError
from .evaluation.command import add_arguments as add_eval_arguments
from .retry import RetryPolicy
from .types import (
    Done,
    InvocationDone,
    InvocationError,
    InvocationStarted,
    MediaChunk,
    MetaResponse,
    Progress,
    TextDelta,
)


class ProgressView:
    """One line per generation with a bar; redrawn in place on a terminal, plain lines otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.lines: dict[int, str] = {}

    def _bar(self, step: int, total: int, width: int = 24) -> str:
        filled = int(width * step / max(total, 1))
        return "#" * filled + "." * (width - filled)

    def update(self, index: int, text: str) -> None:
        self.lines[index] = text
        if self.tty:
            self.out.write("\r\033[K" + "  |  ".join(self.lines[i] for i in sorted(self.lines)))
            self.out.flush()

    def finish(self, index: int, text: str) -> None:
        self.lines.pop(index, None)
        if self.tty:
            self.out.write("\r\033[K")
        self.out.write(text + "\n")
        self.out.flush()

    def progress(self, event: Progress) -> None:
        self.update(
            event.index, f"[{event.index}] {self._bar(event.step, event.total_steps)} {event.step}/{event.total_steps}"
        )


class UsageError(Exception):
    """Options that cannot work together; reported without a traceback."""


def _flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise UsageError(f"{name}={value!r}: expected true or false")


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: must be 0 or more")
    return value


def _add_gateway_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default=None, help="gateway address (host:port)")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--retries",
        type=_count,
        default=DEFAULT_RETRY.max_attempts - 1,
        metavar="N",
        help="tries again a call refused before its first event (RESOURCE_EXHAUSTED, UNAVAILABLE) up to N times "
        "(default %(default)s; 0: never)",
    )
    parser.add_argument(
        "--tls", action="store_true", default=None, help="TLS, verified with the system's CAs (env MODAVERSE_TLS)"
    )
    parser.add_argument(
        "--ca", metavar="PATH", help="PEM CA that verifies the gateway; implies --tls (env MODAVERSE_CA)"
    )
    parser.add_argument(
        "--token", help="bearer token, sent over TLS only (env MODAVERSE_TOKEN keeps it out of the process list)"
    )


def _security(args: argparse.Namespace) -> tuple[bool | str, str | None]:
    """(tls, token) that ``--tls``/``--ca``/``--token`` (else their environment variables) ask for."""
    tls = _flag("MODAVERSE_TLS") if args.tls is None else args.tls
    ca = args.ca or os.environ.get("MODAVERSE_CA") or None
    token = args.token or os.environ.get("MODAVERSE_TOKEN") or None
    if ca is not None and not Path(ca).is_file():
        raise UsageError(f"--ca {ca}: no such file")
    if token and not (tls or ca):
        raise UsageError("a bearer token is sent over TLS only: add --tls or --ca PATH (or MODAVERSE_TLS=1)")
    return ca or bool(tls), token


def _gateway(args: argparse.Namespace) -> Client:
    """The client ``--tls``/``--ca``/``--token`` (else their environment variables) ask for."""
    tls, token = _security(args)
    retry = dataclasses.replace(DEFAULT_RETRY, max_attempts=args.retries + 1)
    return Client(args.target, timeout=args.timeout, tls=tls, token=token, retry=retry)


def _eval(args: argparse.Namespace) -> int:
    from .evaluation.command import run_command

    tls, token = _security(args)  # checked before anything runs

    def connect(timeout: float | None, retry: RetryPolicy | None) -> AsyncClient:
        if retry is not None:
            retry = dataclasses.replace(retry, max_attempts=args.retries + 1)
        return AsyncClient(args.target, timeout=timeout, tls=tls, token=token, retry=retry)

    return run_command(args, connect)


def _chat(args: argparse.Namespace) -> int:
    generators = {
        modality: GenerationOptions(seed=args.seed, steps=args.steps)
        for modality in ("image", "video", "audio")
        if args.seed is not None or args.steps is not None
    }
    out = sys.stdout
    view = ProgressView(sys.stderr)
    builder = ResultBuilder()
    with _gateway(args) as client:
        events = client.chat(
            args.text,
            images=args.image,
            audio=args.audio,
            video=args.video,
            stream=True,
            meta_response_only=args.meta_only,
            generators=generators,
        )
        for event in events:
            builder.add(event)
            if isinstance(event, TextDelta) and args.show_meta:
                out.write(event.text)
            elif isinstance(event, MetaResponse):
                if args.show_meta:
                    out.write("\n")
                out.write(f"meta-response: {event.raw.strip()}\n")
                if event.answer:
                    out.write(f"answer: {event.answer}\n")
                for inv in event.invocations:
                    out.write(f"  -> [{inv.index}] {inv.modality} ({inv.model or 'default'}): {inv.prompt}\n")
            elif isinstance(event, InvocationStarted):
                view.update(event.invocation.index, f"[{event.invocation.index}] {event.invocation.modality} starting")
            elif isinstance(event, Progress):
                view.progress(event)
            elif isinstance(event, MediaChunk):
                pass
            elif isinstance(event, InvocationDone):
                view.finish(event.index, f"[{event.index}] done in {event.elapsed_seconds:.1f}s (seed {event.seed})")
            elif isinstance(event, InvocationError):
                view.finish(event.index, f"[{event.index}] FAILED {event.code}: {event.message}")
            elif isinstance(event, Done):
                out.write(f"done in {event.elapsed_seconds:.1f}s, {event.completion_tokens} tokens\n")
    result = builder.result
    for path in result.save(args.out) if result.media else []:
        out.write(f"saved {path}\n")
    return 1 if result.errors and not result.media and not result.text else 0


def _param(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not (sep and name.strip()):
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, not {text!r}") from None


def _generate(args: argparse.Namespace) -> int:
    options = GenerationOptions(
        model=args.model,
        seed=args.seed,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        width=args.width,
        height=args.height,
        num_frames=args.num_frames,
        fps=args.fps,
        duration_seconds=args.duration,
        negative_prompt=args.negative_prompt,
        params=dict(args.param),
    )
    view = ProgressView(sys.stderr)
    builder = ResultBuilder()
    with _gateway(args) as client:
        for event in client.generate(args.modality, args.prompt, options=options, image=args.image, stream=True):
            builder.add(event)
            if isinstance(event, InvocationStarted):
                inv = event.invocation
                view.update(inv.index, f"[{inv.index}] {inv.modality} ({inv.model}) starting")
            elif isinstance(event, Progress):
                view.progress(event)
            elif isinstance(event, InvocationDone):
                view.finish(event.index, f"[{event.index}] done in {event.elapsed_seconds:.1f}s (seed {event.seed})")
    for path in builder.result.save(args.out):
        sys.stdout.write(f"saved {path}\n")
    return 0


def _models(args: argparse.Namespace) -> int:
    with _gateway(args) as client:
        for route in client.list_models():
            flags = ("default " if route.is_default else "") + ("healthy" if route.healthy else "UNHEALTHY")
            print(f"{route.modality:6s} {route.model:20s} {flags:16s} {', '.join(route.endpoints)}")
    return 0


def _encode(args: argparse.Namespace) -> int:
    with EncoderClient(args.target, timeout=args.timeout) as client:
        info = client.info()
        print(
            f"encoder {info.encoder_model} on {info.device} (profile {info.profile}): "
            f"ImageBind {info.embed_dim}-d -> {info.rows_per_item} x {info.llm_hidden_size} LLM rows"
        )
        items = client.encode([media_from_file(p) for p in args.files])
    vectors = []
    for path, item in zip(args.files, items, strict=True):
        assert item.imagebind is not None
        vectors.append(item.imagebind / max(float(np.linalg.norm(item.imagebind)), 1e-12))
        print(
            f"  {path}: {item.modality:5s} imagebind |v|={np.linalg.norm(item.imagebind):.3f}  "
            f"projected {tuple(item.projected.shape)} {item.projected.dtype} "
            f"mean={float(item.projected.astype(np.float32).mean()):+.4f}"
        )
    if len(vectors) > 1:
        sims = np.stack(vectors) @ np.stack(vectors).T
        print("cosine similarity of the ImageBind vectors:")
        for i, path in enumerate(args.files):
            print(f"  {' '.join(f'{s:+.2f}' for s in sims[i])}  {path}")
    return 0


def _up(args: argparse.Namespace) -> int:
    from .local import ServicesNotInstalled
    from .stack import run_stack

    try:
        web_port = None if args.no_web else args.web_port
        return run_stack(profile=args.profile, gateway_port=args.port, log_dir=Path(args.log_dir), web_port=web_port)
    except ServicesNotInstalled as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def version_text() -> str:
    """The SDK's version and the contracts' (the API version) it speaks; released together, so equal."""
    from . import API_VERSION, __version__

    return f"modaverse {__version__}\nmodaverse-protos {API_VERSION} (API version)"


class _VersionAction(argparse.Action):
    """``--version``: argparse's own action would re-wrap the two lines into one."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the SDK and API versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(version_text())
        parser.exit()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="modaverse", description="ModaVerse client and local stack")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)

    chat = sub.add_parser("chat", help="one chat turn: text plus optional media in, text/media out")
    chat.add_argument("text")
    chat.add_argument("--image", action="append", default=[], help="image file (repeatable)")
    chat.add_argument("--audio", action="append", default=[], help="audio file (repeatable)")
    chat.add_argument("--video", action="append", default=[], help="video file (repeatable)")
    chat.add_argument("--out", default="outputs", help="folder for generated media")
    chat.add_argument("--meta-only", action="store_true", help="return the meta-response only, generate nothing")
    chat.add_argument("--show-meta", action="store_true", help="stream the LLM's text as it is written")
    chat.add_argument("--seed", type=int, help="generator seed")
    chat.add_argument("--steps", type=int, help="generator denoising steps")
    chat.set_defaults(handler=_chat)

    models = sub.add_parser("models", help="routable generators and their health")
    models.set_defaults(handler=_models)

    up = sub.add_parser("up", help="run the whole stack locally (separate processes) until Ctrl-C")
    up.add_argument("--profile", choices=["tiny", "full"], default="tiny")
    up.add_argument("--port", type=int, default=50050, help="gateway port")
    up.add_argument("--log-dir", default=".modaverse/logs")
    up.add_argument(
        "--web-port", type=int, default=8080, help="the web front door (playground, OpenAI-compatible API); 0 = any"
    )
    up.add_argument("--no-web", action="store_true", help="do not start the web front door (modaverse-web)")
    up.set_defaults(handler=_up)

    enc = sub.add_parser("encode", help="embed media files with an encoder service directly")
    enc.add_argument("files", nargs="+")
    enc.set_defaults(handler=_encode, default_target="localhost:50051")

    gen = sub.add_parser("generate", help="one image, video or audio clip from a prompt (a generator only, no LLM)")
    gen.add_argument("modality", choices=["image", "video", "audio"])
    gen.add_argument("prompt")
    gen.add_argument("--out", default="outputs", help="folder for the generated file")
    gen.add_argument("--model", default="", help="generator route (default: the modality's default)")
    gen.add_argument("--seed", type=int)
    gen.add_argument("--steps", type=int, help="denoising steps")
    gen.add_argument("--guidance-scale", type=float)
    gen.add_argument("--width", type=int)
    gen.add_argument("--height", type=int)
    gen.add_argument("--num-frames", type=int, help="video")
    gen.add_argument("--fps", type=int, help="video")
    gen.add_argument("--duration", type=float, help="audio seconds")
    gen.add_argument("--negative-prompt", default="")
    gen.add_argument("--image", default=None, help="input image file, for an image-to-image route (--model)")
    gen.add_argument(
        "--param",
        action="append",
        type=_param,
        default=[],
        metavar="NAME=VALUE",
        help="any other parameter of the generator, e.g. strength=0.6 (repeatable)",
    )
    gen.set_defaults(handler=_generate)

    add_cluster_parser(sub)  # `modaverse cluster status|scale|routes` (needs modaverse[cluster])

    ev = sub.add_parser(
        "eval",
        help="run a benchmark file through a gateway: routing, prompts, latency, failures, agreement, round trips",
        description="Writes DIR/report.json, DIR/report.md, confusion.png, latency.png, scores.png and DIR/media/; "
        "resumable (the same command again skips finished records). See docs/eval.md. Needs modaverse[eval].",
    )
    add_eval_arguments(ev)
    ev.set_defaults(handler=_eval)

    for p in (chat, models, gen, ev):
        _add_gateway_options(p)
    enc.add_argument("--target", default=None, help="encoder address (host:port)")
    enc.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    if getattr(args, "target", "x") is None:
        args.target = getattr(args, "default_target", "localhost:50050")
    try:
        sys.exit(args.handler(args))
    except (ModaverseError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)

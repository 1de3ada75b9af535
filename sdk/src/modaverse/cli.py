"""The ``modaverse`` command. For now: ``modaverse encode FILE...`` against an encoder."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from .encoder import EncoderClient, media_from_file
from .errors import ModaverseError


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="modaverse")
    sub = parser.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode", help="embed media files with an encoder service")
    enc.add_argument("files", nargs="+")
    enc.add_argument("--target", default="localhost:50051", help="encoder address")
    enc.add_argument("--timeout", type=float, default=60.0)
    enc.set_defaults(handler=_encode)
    args = parser.parse_args(argv)
    try:
        sys.exit(args.handler(args))
    except ModaverseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

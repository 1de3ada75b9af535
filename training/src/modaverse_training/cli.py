"""``modaverse-train``: build data, train, export, count parameters, run the tiny recipe.

modaverse-train shapes --out DIR                  render the shapes world + train/validation/test JSONL
modaverse-train train --train T.jsonl --eval V.jsonl [--test X.jsonl] --run-dir RUN [--export OUT] [--train-base]
modaverse-train params                            trainable parameters of the release's configuration
modaverse-train tiny [--docs docs/training.md]    the tiny recipe, exported into the tiny profile
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

from modaverse_runtime.settings import default_model_dir

from .params import SizeConfig, count_parameters, hand_count
from .progress import MODES, Progress
from .trainer import TrainConfig


def _progress_mode(args: argparse.Namespace) -> str:
    """``--no-progress`` wins over ``--progress``."""
    return "off" if getattr(args, "no_progress", False) else str(getattr(args, "progress", "auto"))


def _progress(args: argparse.Namespace) -> Progress:
    return Progress.create(_progress_mode(args))


def _train_config(args: argparse.Namespace, base: TrainConfig) -> TrainConfig:
    changes = {
        name: getattr(args, name)
        for name in (
            "steps",
            "batch_size",
            "grad_accum",
            "lr",
            "base_lr",
            "warmup",
            "eval_every",
            "checkpoint_every",
            "seed",
        )
        if getattr(args, name, None) is not None
    }
    return replace(base, **changes, progress=_progress_mode(args) != "off")


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--base-lr", type=float)
    p.add_argument("--adaptor-lr", type=float, help="0 = --lr")
    p.add_argument("--warmup", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch CPU threads (0 = torch's default)")
    p.add_argument(
        "--progress",
        choices=MODES,
        default="auto",
        help="auto (default): one updating line per stage on a terminal, a plain line every 20 s otherwise; "
        "bar; lines; off",
    )
    p.add_argument("--no-progress", action="store_true", help="same as --progress off")


def _cmd_shapes(args: argparse.Namespace) -> int:
    from .recipe import TinyRecipe, build_data

    recipe = TinyRecipe(images=args.images, audio=args.audio, video=args.video, seed=args.seed)
    splits = build_data(args.out, recipe, Progress.create("auto"))
    print(f"wrote {splits.train}, {splits.validation} and {splits.test}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from modaverse_encoder.settings import EncoderSettings
    from modaverse_llm.tiny import ensure_tiny_llm

    from .pipeline import RunSpec, run
    from .schema import read_jsonl

    overrides = {"model_dir": args.model_dir, "profile": args.profile}
    if args.imagebind_checkpoint:
        overrides.update(imagebind_checkpoint=args.imagebind_checkpoint, imagebind_arch=args.imagebind_arch)
    encoder = EncoderSettings(**overrides)  # plus MODAVERSE_* from the environment, as the service reads them
    base = args.base or (str(ensure_tiny_llm(args.model_dir) / "base") if args.profile == "tiny" else "")
    if not base:
        print("--base is required with --profile full", file=sys.stderr)
        return 2
    spec = RunSpec(
        train=read_jsonl(args.train),
        train_root=args.train.parent,
        eval=read_jsonl(args.eval) if args.eval else [],
        eval_root=args.eval.parent if args.eval else args.train.parent,
        test=read_jsonl(args.test) if args.test else [],
        test_root=args.test.parent if args.test else None,
        base=base,
        encoder=encoder,
        run_dir=args.run_dir,
        cache_dir=args.cache_dir or args.run_dir / "features",
        config=_train_config(args, TrainConfig()),
        train_base=args.train_base,
        adaptor=args.adaptor,
        adaptor_mode=args.adaptor_mode,
        whiten_scale=args.whiten_scale,
        export_dir=args.export,
        resume=not args.no_resume,
        device=args.device,
        progress=_progress(args),
    )
    result = run(spec)
    scores = {"eval": result.final and result.final.as_dict(), "test": result.test and result.test.as_dict()}
    print(json.dumps({"trainable_parameters": result.trainable, **scores}))
    return 0


def _cmd_params(args: argparse.Namespace) -> int:
    size = SizeConfig(adaptor_mode=args.adaptor_mode)
    count = count_parameters(size)
    print(
        json.dumps(
            {
                "lora": count.lora,
                "adaptor": count.adaptor,
                "added_token_rows": count.added_rows,
                "trainable": count.trainable,
                "hand_count": hand_count(size),
                "base_llm_total": count.base_total,
            },
            indent=2,
        )
    )
    return 0


def _cmd_tiny(args: argparse.Namespace) -> int:
    from .recipe import TinyRecipe, run_tiny
    from .report import write_results

    recipe = TinyRecipe()
    recipe = replace(recipe, images=args.images or recipe.images, config=_train_config(args, recipe.config))
    if args.no_image_generator:
        recipe = replace(recipe, image_generator=None)
    summary = run_tiny(args.model_dir, args.work, recipe, force=args.force, progress=_progress(args))
    if args.docs:
        write_results(args.docs, summary)
    print(json.dumps({"validation": summary.get("eval"), "test": summary.get("test")}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modaverse-train", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    model_dir = Path(os.environ.get("MODAVERSE_MODEL_DIR", default_model_dir()))

    p = sub.add_parser("shapes", help="render the shapes world and write train/validation/test JSONL")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--audio", type=int, default=500)
    p.add_argument("--video", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_shapes)

    p = sub.add_parser("train", help="train on instruction JSONL and (optionally) export")
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--eval", type=Path, help="validation JSONL, evaluated while training")
    p.add_argument("--test", type=Path, help="test JSONL, evaluated once after training")
    p.add_argument("--run-dir", type=Path, required=True, help="checkpoints + summary; resumed if present")
    p.add_argument("--cache-dir", type=Path, help="ImageBind feature cache (default <run-dir>/features)")
    p.add_argument("--export", type=Path, help="write the serving artifacts here")
    p.add_argument("--profile", choices=["tiny", "full"], default="tiny")
    p.add_argument("--model-dir", type=Path, default=model_dir)
    p.add_argument("--base", help="base LLM folder (default: the tiny profile's)")
    p.add_argument("--imagebind-checkpoint", type=Path)
    p.add_argument("--imagebind-arch", default="imagebind_huge")
    p.add_argument("--adaptor", type=Path, help="adaptor folder to start from (default: fresh)")
    p.add_argument("--adaptor-mode", choices=["shared", "per_modality"], default="shared")
    p.add_argument("--whiten-scale", type=float, default=1.0, help="norm of a whitened adaptor input (tiny: 16)")
    p.add_argument("--train-base", action="store_true", help="also train the base LLM (tiny profile only)")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--device", default="auto")
    _add_train_options(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("params", help="trainable parameters of the release's 7B configuration (meta device)")
    p.add_argument("--adaptor-mode", choices=["shared", "per_modality"], default="shared")
    p.set_defaults(func=_cmd_params)

    p = sub.add_parser("tiny", help="the tiny recipe; exports into <model-dir>/tiny (skipped if done)")
    p.add_argument("--model-dir", type=Path, default=model_dir)
    p.add_argument("--work", type=Path, default=model_dir.parent / "train-tiny", help="world, features, checkpoints")
    p.add_argument("--docs", type=Path, help="write the results table into this markdown file")
    p.add_argument("--images", type=int)
    p.add_argument("--force", action="store_true", help="retrain even if an export exists")
    p.add_argument("--no-image-generator", action="store_true", help="keep the random tiny image generator")
    _add_train_options(p)
    p.set_defaults(func=_cmd_tiny)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Our own display shows each stage; the hub's and transformers' bars (shards written, weights loaded) would
    # only interleave with it.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

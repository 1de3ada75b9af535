"""The tiny recipe: shapes world → instruction data → features → training → export into the tiny profile.

Splits, per caption file: the last ``validation`` fraction of the media is the validation split (the
recipe's settings were tuned on it; it was the only held-out set when they were chosen), the
``test`` fraction before it is the test split, and the rest trains. Instructions are drawn per split
with their own seed, and the test split's only use (caption, template) combinations that training and
validation never use (:class:`~modaverse_training.builder.HeldOutCombos`): new media in new wordings
of known colours and shapes. The tiny base LLM is random, so this recipe trains it too
(``train_base``, the one deviation from the release's recipe; see docs/training.md). The export goes to
``<model_dir>/tiny``, where the tiny profile's services load from, so the local stack then serves the
trained model.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from modaverse_encoder.settings import EncoderSettings
from modaverse_encoder.tiny import ensure_tiny_encoder
from modaverse_llm.template import PROMPT_FORMAT
from modaverse_llm.tiny import ensure_tiny_llm

from .benchmark import write_benchmark
from .builder import CaptionedMedia, HeldOutCombos, Side, build_examples, read_captions
from .export import EXPORT_INFO
from .generator_job import start_generator_job
from .image_generator import GeneratorTrainConfig, generator_dirs
from .pipeline import RunSpec, run
from .progress import Progress
from .schema import write_jsonl
from .shapes import WorldCounts, generate_world
from .trainer import TrainConfig

log = logging.getLogger(__name__)
TINY_CONFIG = TrainConfig(
    steps=2400,
    batch_size=32,
    lr=1e-3,
    base_lr=1e-3,
    adaptor_lr=1e-2,
    warmup=100,
    eval_every=600,
    checkpoint_every=300,
    threads=1,
)
# Bumped when the recipe changes what an export means (2: train/validation/test splits, the test benchmark file;
# 3: the trained image generator); an export of another version is retrained.
RECIPE_VERSION = 3
# The image generator's settings that drew the most recognisable colours in the describer's eyes (one thread: the
# other core trains the LLM). See docs/training.md#the-image-generator.
TINY_GENERATOR = GeneratorTrainConfig(
    threads=1, text_lr=5e-4, text_warmup_steps=100, signal_free_from=900, signal_free_weight=0.2, latent_mix=0.5
)
TINY_MIX = {"input": 0.5, "output": 0.3, "reasoning": 0.2}  # input-side weighted: describing is the hard part


@dataclass(frozen=True)
class TinyRecipe:
    # Shape survives a random tiny ImageBind only with >= ~10k images (docs/architecture.md#findings).
    images: int = 10000
    audio: int = 300
    video: int = 60  # ~0.7 s each to encode (5 clips x 3 crops through the vision trunk)
    validation: float = 0.1
    test: float = 0.1
    train_examples: int = 40000
    eval_examples: int = 300  # validation
    test_examples: int = 300
    seed: int = 0
    # Unit variance per dimension. 600-step runs: describe 51.7% (scale 16) / 51.0% (scale 1, adaptor_lr
    # 1e-2), against 50.3% for 1800 steps with neither (docs/training.md).
    whiten_scale: float = 16.0
    config: TrainConfig = field(default_factory=lambda: TINY_CONFIG)
    # The text-to-image (and image-to-image) generator, trained on the shapes world beside the LLM (its own
    # process, one thread); None keeps the random tiny generator.
    image_generator: GeneratorTrainConfig | None = field(default_factory=lambda: TINY_GENERATOR)


@dataclass(frozen=True)
class Splits:
    train: Path
    validation: Path
    test: Path


def split(
    items: list[CaptionedMedia], validation: float, test: float
) -> tuple[list[CaptionedMedia], list[CaptionedMedia], list[CaptionedMedia]]:
    """(train, validation, test): validation is the last ``validation`` fraction, test the ``test`` fraction
    before it; each gets at least one item."""
    n_val = max(1, round(len(items) * validation))
    n_test = max(1, round(len(items) * test))
    cut = len(items) - n_val - n_test
    if cut < 1:
        raise ValueError(f"{len(items)} items cannot be split into train, validation ({n_val}) and test ({n_test})")
    return items[:cut], items[len(items) - n_val :], items[cut : len(items) - n_val]


def build_data(world: Path, recipe: TinyRecipe, progress: Progress | None = None) -> Splits:
    """Render the world (once) and write train.jsonl / validation.jsonl / test.jsonl beside it."""
    progress = progress if progress is not None else Progress.off()
    counts = WorldCounts(recipe.images, recipe.audio, recipe.video)
    stamp = world / "world.json"
    if not stamp.is_file() or json.loads(stamp.read_text()) != {**asdict(counts), "seed": recipe.seed}:
        files = counts.images + counts.audio + counts.video
        with progress.stage("rendering the shapes world", total=files, unit="file") as stage:
            generate_world(world, counts, recipe.seed, on_file=stage.update)
        stamp.write_text(json.dumps({**asdict(counts), "seed": recipe.seed}) + "\n")
    parts: dict[str, list[CaptionedMedia]] = {"train": [], "validation": [], "test": []}
    for kind in ("image", "audio", "video"):
        captions = read_captions(world / f"{kind if kind != 'image' else 'images'}.tsv", kind)
        for name, items in zip(parts, split(captions, recipe.validation, recipe.test), strict=True):
            parts[name] += items
    combos = HeldOutCombos(recipe.seed)
    sizes = {"train": recipe.train_examples, "validation": recipe.eval_examples, "test": recipe.test_examples}
    with progress.stage("writing {} + {} + {} instructions".format(*sizes.values())):
        for offset, (name, items) in enumerate(parts.items(), start=1):
            side: Side = "test" if name == "test" else "train"
            examples = build_examples(
                items, sizes[name], mix=TINY_MIX, seed=recipe.seed + offset, id_prefix=name, combos=combos, side=side
            )
            write_jsonl(world / f"{name}.jsonl", examples)
    return Splits(world / "train.jsonl", world / "validation.jsonl", world / "test.jsonl")


def run_tiny(
    model_dir: Path, work: Path, recipe: TinyRecipe, force: bool = False, progress: Progress | None = None
) -> dict[str, Any]:
    """Returns the export's summary; skips everything when the tiny profile already holds an export.
    ``progress``: where each stage is shown (default: from ``recipe.config.progress``)."""
    out = model_dir / "tiny"
    if (out / EXPORT_INFO).is_file() and not force:
        summary: dict[str, Any] = json.loads((out / EXPORT_INFO).read_text())
        if summary.get("prompt_format") == PROMPT_FORMAT and summary.get("recipe_version") == RECIPE_VERSION:
            log.info("trained tiny model already exported in %s (use --force to retrain)", out)
            return summary
        log.info("the export in %s was made by another prompt format or recipe version: retraining", out)
        force = True
    started = time.perf_counter()
    if progress is None:
        progress = Progress.create("auto" if recipe.config.progress else "off")
    if force:  # retrain from scratch: the old run's checkpoints belong to another configuration
        shutil.rmtree(work / "run", ignore_errors=True)
    beside = " and, beside it, the image generator" if recipe.image_generator else ""
    progress.note(
        f"training the tiny model into {out} (once; later runs reuse it): render the shapes world, ImageBind "
        f"features, {recipe.config.steps} training steps, export{beside}"
    )
    with progress.stage("building the tiny base models"):
        ensure_tiny_encoder(model_dir)
        llm = ensure_tiny_llm(model_dir)
    generator = None
    if recipe.image_generator is not None:
        generator = start_generator_job(generator_dirs(model_dir), recipe.image_generator, recipe.seed, progress)
    # Train from a snapshot of the random base: the export replaces <model_dir>/tiny/llm.
    from .schema import read_jsonl

    t0 = time.perf_counter()
    splits = build_data(work / "world", recipe, progress)
    data_seconds = time.perf_counter() - t0
    test = read_jsonl(splits.test)
    spec = RunSpec(
        train=read_jsonl(splits.train),
        train_root=splits.train.parent,
        eval=read_jsonl(splits.validation),
        eval_root=splits.validation.parent,
        test=test,
        test_root=splits.test.parent,
        base=str(_snapshot_base(llm / "base", work / "base")),
        encoder=EncoderSettings(model_dir=model_dir, profile="tiny"),
        run_dir=work / "run",
        cache_dir=work / "features",
        config=recipe.config,
        train_base=True,
        whiten_scale=recipe.whiten_scale,
        export_dir=out,
        resume=True,
        progress=progress,
    )
    image_generator: dict[str, Any] = {}
    try:
        result = run(spec)
        write_benchmark(test, splits.test.parent, out / "eval", HeldOutCombos(recipe.seed))
        if generator is not None:
            with progress.stage("waiting for the image generator's training"):
                image_generator = generator.wait()
    finally:
        if generator is not None:
            generator.stop()
    summary = json.loads((out / EXPORT_INFO).read_text())
    if generator is not None:
        summary["image_generator"] = image_generator
    summary.update(
        data_seconds=data_seconds,
        total_seconds=time.perf_counter() - started,
        recipe=asdict(recipe),
        recipe_version=RECIPE_VERSION,
    )
    (out / EXPORT_INFO).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    log.info("tiny recipe done: %s", result.final)
    return summary


def _snapshot_base(source: Path, target: Path) -> Path:
    if not (target / "model.safetensors").is_file():
        shutil.copytree(source, target, dirs_exist_ok=True)
    return target


def quick(recipe: TinyRecipe, **changes: Any) -> TinyRecipe:
    return replace(recipe, **changes)

"""Instruction JSONL + encoder + base LLM → a trained, exported model (what ``modaverse-train train`` runs)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from modaverse_encoder.architectures import architecture_kwargs
from modaverse_encoder.artifacts import EncoderArtifacts
from modaverse_encoder.settings import EncoderSettings
from modaverse_llm.compat import prime_transformers
from modaverse_llm.prompt import PromptBuilder
from modaverse_runtime.devices import resolve_device

from .data import Encoded, encode_example, resolve_media
from .evaluate import EvalResult, evaluate, example_vectors
from .export import export
from .features import FeatureCache, FeatureStats
from .model import ModaVerseModel, ModelSpec, build_model
from .progress import Progress
from .schema import Example
from .trainer import EvalSet, History, TrainConfig, Trainer, seed_everything, torch_threads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    train: Sequence[Example]
    train_root: Path  # media paths are relative to it
    eval: Sequence[Example]  # validation: evaluated while training (the recipe is tuned on it)
    eval_root: Path
    base: str  # base LLM folder
    encoder: EncoderSettings
    run_dir: Path
    cache_dir: Path
    config: TrainConfig = field(default_factory=TrainConfig)
    train_base: bool = False
    adaptor: Path | None = None
    adaptor_mode: str = "shared"
    whiten_scale: float = 1.0
    export_dir: Path | None = None
    resume: bool = True
    device: str = "auto"
    # Where progress goes (None: from config.progress, a bar on a terminal and plain lines elsewhere).
    progress: Progress | None = None
    # The test split: evaluated once, after training (never during it); its media are encoded with the rest.
    test: Sequence[Example] = ()
    test_root: Path | None = None

    def display(self) -> Progress:
        if self.progress is not None:
            return self.progress
        return Progress.create("auto" if self.config.progress else "off")


@dataclass
class Prepared:
    features: torch.Tensor
    train: list[Encoded]
    train_index: list[list[int]]
    eval_vectors: list[torch.Tensor]
    test_vectors: list[torch.Tensor]
    stats: FeatureStats
    seconds: float
    encoder: EncoderArtifacts


@dataclass
class RunResult:
    model: ModaVerseModel
    history: History
    final: EvalResult | None
    test: EvalResult | None
    trainable: int
    feature_stats: FeatureStats
    feature_seconds: float


def prepare(spec: RunSpec, builder: PromptBuilder, context: int, progress: Progress | None = None) -> Prepared:
    """Features for every media file (from the cache where possible) and the tokenized train set."""
    started = time.perf_counter()
    train_media = [resolve_media(ex, spec.train_root) for ex in spec.train]
    eval_media = [resolve_media(ex, spec.eval_root) for ex in spec.eval]
    test_media = [resolve_media(ex, spec.test_root or spec.eval_root) for ex in spec.test]
    table: dict[tuple[str, Path], int] = {}
    for items in [*train_media, *eval_media, *test_media]:
        for item in items:
            table.setdefault(item, len(table))
    cache = FeatureCache(spec.encoder, spec.cache_dir)
    if table:
        features, stats = cache.vectors(list(table), progress=progress if progress is not None else spec.display())
    else:
        embed_dim = int(architecture_kwargs(cache.artifacts.arch, cache.artifacts.arch_overrides)["out_embed_dim"])
        features, stats = torch.zeros(0, embed_dim), FeatureStats(0, 0)
    train = [encode_example(builder, ex, spec.train_root, context) for ex in spec.train]
    train_index = [[table[m] for m in items] for items in train_media]
    eval_vectors = example_vectors([[table[m] for m in items] for items in eval_media], features)
    test_vectors = example_vectors([[table[m] for m in items] for items in test_media], features)
    seconds = time.perf_counter() - started
    return Prepared(features, train, train_index, eval_vectors, test_vectors, stats, seconds, cache.artifacts)


def run(spec: RunSpec) -> RunResult:
    seed_everything(spec.config.seed)
    progress = spec.display()
    device = resolve_device(spec.device)
    prime_transformers()  # before transformers meets the encoder's stand-in timm (modaverse_llm.compat)
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec.base)
    context = int(AutoConfig.from_pretrained(spec.base).max_position_embeddings)
    with torch_threads(spec.config.threads):
        data = prepare(spec, PromptBuilder(tokenizer), context, progress)
    log.info("features: %d cached, %d computed in %.1fs", data.stats.hits, data.stats.computed, data.seconds)
    model_spec = ModelSpec(
        base=spec.base,
        adaptor=spec.adaptor,
        embed_dim=int(data.features.shape[1]),
        adaptor_mode=spec.adaptor_mode,
        train_base=spec.train_base,
        whiten_scale=spec.whiten_scale,
    )
    fit_rows = sorted({i for index in data.train_index for i in index})
    model = build_model(model_spec, device, data.features.to(device), fit_rows)
    trainable = model.trainable_parameters()
    log.info("trainable parameters: %s", f"{trainable:,}")
    eval_set = EvalSet(spec.eval, data.eval_vectors) if spec.eval else None
    trainer = Trainer(model, data.train, data.train_index, spec.config, spec.run_dir, eval_set, progress)
    if spec.resume:
        trainer.resume()
    history = trainer.train()
    final = trainer.last_eval[1] if trainer.last_eval and trainer.last_eval[0] == trainer.step else None
    if spec.eval and final is None:
        with torch_threads(spec.config.threads), progress.stage(f"evaluating on {len(spec.eval)} examples"):
            final = evaluate(model, spec.eval, data.eval_vectors, spec.config.eval_max_tokens)
    test = None
    if spec.test:
        with torch_threads(spec.config.threads), progress.stage(f"evaluating on the test split ({len(spec.test)})"):
            test = evaluate(model, spec.test, data.test_vectors, spec.config.eval_max_tokens)
    summary: dict[str, Any] = {
        "trainable_parameters": trainable,
        "steps": trainer.step,
        "train_seconds": history.seconds,
        "feature_seconds": data.seconds,
        "final_loss": history.losses[-1] if history.losses else None,
        "eval": final.as_dict() if final else None,
        "test": test.as_dict() if test else None,
        "config": asdict(spec.config),
        "train_base": spec.train_base,
        "whiten_scale": spec.whiten_scale,
    }
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    (spec.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if spec.export_dir is not None:
        with progress.stage(f"exporting to {spec.export_dir}"):
            export(model, data.encoder, spec.export_dir, summary)
    return RunResult(model, history, final, test, trainable, data.stats, data.seconds)

"""A small shapes world, the tiny models, and a prepared training set, built once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from modaverse_encoder.settings import EncoderSettings
from modaverse_llm.tiny import ensure_tiny_llm
from modaverse_training.builder import build_examples, read_captions
from modaverse_training.data import Encoded
from modaverse_training.model import ModaVerseModel, ModelSpec, build_model
from modaverse_training.pipeline import Prepared, RunSpec, prepare
from modaverse_training.schema import Example
from modaverse_training.shapes import WorldCounts, generate_world
from modaverse_training.trainer import TrainConfig, seed_everything, torch_threads


@dataclass
class Tiny:
    model_dir: Path
    base: str
    world: Path
    train: list[Example]
    eval: list[Example]
    spec: RunSpec
    data: Prepared

    def model(self, train_base: bool = False, seed: int = 0) -> ModaVerseModel:
        seed_everything(seed)
        spec = ModelSpec(
            base=self.base, adaptor=None, embed_dim=int(self.data.features.shape[1]), train_base=train_base
        )
        rows = sorted({i for index in self.data.train_index for i in index})
        return build_model(spec, torch.device("cpu"), self.data.features, rows)

    @property
    def encoded(self) -> list[Encoded]:
        return self.data.train


@pytest.fixture(scope="session")
def tiny(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    root = tmp_path_factory.mktemp("training")
    base = str(ensure_tiny_llm(model_dir) / "base")
    world = root / "world"
    files = generate_world(world, WorldCounts(images=60, audio=10, video=2), seed=0)
    items = [item for kind, path in files.items() for item in read_captions(path, kind)]
    train = build_examples(items, 300, seed=1, id_prefix="t")
    evaluation = build_examples(items, 16, seed=2, id_prefix="e")
    spec = RunSpec(
        train=train,
        train_root=world,
        eval=evaluation,
        eval_root=world,
        base=base,
        encoder=EncoderSettings(model_dir=model_dir),
        run_dir=root / "run",
        cache_dir=root / "features",
        config=TrainConfig(progress=False),
    )
    from transformers import AutoTokenizer

    from modaverse_llm.prompt import PromptBuilder

    with torch_threads(1):
        data = prepare(spec, PromptBuilder(AutoTokenizer.from_pretrained(base)), 1024)
    return Tiny(model_dir, base, world, train, evaluation, spec, data)

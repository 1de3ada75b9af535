"""The trainer on the tiny models: loss falls, resume equals an uninterrupted run, only the right weights move."""

from __future__ import annotations

import io
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from modaverse_training.progress import Progress
from modaverse_training.trainer import EvalSet, TrainConfig, Trainer, seed_everything

from .conftest import Tiny


def _trainer(tiny: Tiny, run_dir: Path, config: TrainConfig, train_base: bool = False, seed: int = 0) -> Trainer:
    model = tiny.model(train_base=train_base, seed=seed)
    return Trainer(model, tiny.data.train, tiny.data.train_index, config, run_dir)


def test_loss_falls_on_a_short_run(tiny: Tiny, tmp_path: Path) -> None:
    """The CI version of the tiny recipe: a few dozen steps on a few hundred examples."""
    started = time.perf_counter()
    config = TrainConfig(steps=40, batch_size=8, lr=1e-3, base_lr=1e-3, warmup=5, progress=False, threads=1)
    history = _trainer(tiny, tmp_path, config, train_base=True).train()
    first, last = sum(history.losses[:5]) / 5, sum(history.losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    assert time.perf_counter() - started < 60


def test_progress_shows_steps_metrics_and_evaluations(tiny: Tiny, tmp_path: Path) -> None:
    """What `make demo` prints while training (plain lines, as in CI); a fake clock, a second per reading."""
    ticks = iter(range(10_000))
    out = io.StringIO()
    progress = Progress("lines", out, clock=lambda: float(next(ticks)), interval=1.0)
    config = TrainConfig(steps=2, batch_size=4, lr=1e-3, warmup=1, threads=1, eval_every=1)
    eval_set = EvalSet(tiny.eval[:2], tiny.data.eval_vectors[:2])
    model = tiny.model()
    Trainer(model, tiny.data.train, tiny.data.train_index, config, tmp_path, eval_set, progress).train()
    lines = out.getvalue().splitlines()
    assert lines[0] == "training: started (2 steps to go)"
    assert any(re.fullmatch(r"training 1/2 steps 50% \| loss \d+\.\d{3} lr \S+ \| .* left", x) for x in lines), lines
    assert any(x.startswith("training 1/2 steps 50% (evaluating on 2 examples)") for x in lines), lines
    assert [x.split(":")[0] for x in lines if x.startswith("step ")] == ["step 1", "step 2"]
    assert re.fullmatch(r"training: done, 2 steps in \d+s \(.*\) \| loss \d+\.\d{3} lr \S+", lines[-1]), lines


def test_resume_equals_an_uninterrupted_run(tiny: Tiny, tmp_path: Path) -> None:
    # LoRA dropout (0.1) draws from torch's RNG, so this also checks that RNG state is restored.
    config = TrainConfig(steps=6, batch_size=4, grad_accum=2, lr=5e-3, warmup=2, progress=False, threads=1)
    straight = _trainer(tiny, tmp_path / "a", config)
    straight.train()

    first = _trainer(tiny, tmp_path / "b", config)
    first.train(stop_at=3)
    first.save_checkpoint()
    seed_everything(1234)  # a new process: different RNG state and a differently initialised model
    resumed = _trainer(tiny, tmp_path / "b", config, seed=99)
    assert resumed.resume()
    assert resumed.step == 3
    resumed.train()

    assert straight.history.losses == resumed.history.losses
    other = _trainer(tiny, tmp_path / "b", replace(config, lr=1e-3))
    with pytest.raises(ValueError, match="other settings"):  # a checkpoint of another configuration
        other.resume()
    a, b = straight.trainable_state(), resumed.trainable_state()
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0, msg=name)
    # and training did move them (the comparison is not vacuous)
    fresh = tiny.model().state_dict()
    assert any(not torch.equal(fresh[n.removeprefix("")], a[n]) for n in a if n in fresh)


def test_only_adaptor_lora_and_added_token_rows_move(tiny: Tiny, tmp_path: Path) -> None:
    trainer = _trainer(tiny, tmp_path, TrainConfig(steps=3, batch_size=8, lr=1e-2, warmup=1, progress=False, threads=1))
    model = trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    after = dict(model.named_parameters())
    added = model.added_ids
    for name, old in before.items():
        new = after[name].detach()
        if "lora_" in name or name.startswith("adaptor."):
            assert not torch.equal(old, new), name
        elif name.endswith(("embed_tokens.weight", "lm_head.weight")):
            others = torch.ones(old.shape[0], dtype=torch.bool)
            others[added] = False
            assert torch.equal(old[others], new[others]), name
            assert not torch.equal(old[added], new[added]), name
        else:
            assert torch.equal(old, new), name


def test_trainable_parameter_count_of_the_tiny_model(tiny: Tiny) -> None:
    # 2 layers x 4 projections x r=32 x (256 + 256) + Linear(256 -> 256) + 6 added tokens x 256 x 2 matrices
    assert tiny.model().trainable_parameters() == 2 * 4 * 32 * 512 + (256 * 256 + 256) + 6 * 256 * 2

"""The single-stage I/O-alignment training loop.

One optimizer step = ``grad_accum`` micro-batches. The data order is a pure function of
(seed, epoch) and the global micro-batch number, and a checkpoint holds the trainable tensors,
optimizer, scheduler, step and every RNG state (dropout draws from torch's global generator), so
a run resumed from a checkpoint continues exactly as the uninterrupted run would have.
bf16 autocast is used on CUDA only (CPU bf16 matmuls are slower than fp32 here).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import Batch, Encoded, collate
from .evaluate import EvalResult, evaluate
from .model import ModaVerseModel
from .progress import Progress, Stage
from .schema import Example

log = logging.getLogger(__name__)
LATEST = "latest"
# Settings a resumed run must share with its checkpoint (the rest, e.g. eval_every, may change).
_RESUME_KEYS = ("steps", "batch_size", "grad_accum", "lr", "base_lr", "adaptor_lr", "warmup", "seed")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 2e-4  # adaptor, LoRA, added-token rows
    base_lr: float = 1e-3  # base weights, with train_base only
    adaptor_lr: float = 0.0  # 0 = lr
    warmup: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    eval_every: int = 0  # steps; 0 = only at the end
    eval_max_tokens: int = 32
    checkpoint_every: int = 0  # steps; 0 = only at the end
    progress: bool = True  # show progress (where: bar or lines, see progress.py); False: silent
    # CPU threads for torch (0 = torch's default). On a shared 2-core machine one thread is ~10x
    # faster than two for this tiny model: OpenMP's spinning threads lose to the other processes.
    threads: int = 0


@dataclass
class EvalSet:
    examples: Sequence[Example]
    vectors: Sequence[torch.Tensor]


@dataclass
class History:
    losses: list[float] = field(default_factory=list)  # one per optimizer step
    evals: list[tuple[int, dict[str, float | int]]] = field(default_factory=list)
    seconds: float = 0.0


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    def __init__(
        self,
        model: ModaVerseModel,
        data: Sequence[Encoded],
        media_index: Sequence[Sequence[int]],
        config: TrainConfig,
        run_dir: Path,
        eval_set: EvalSet | None = None,
        progress: Progress | None = None,
    ) -> None:
        if len(data) < config.batch_size:
            raise ValueError(f"{len(data)} training examples; need at least batch_size={config.batch_size}")
        self.model, self.data, self.media_index, self.config = model, data, media_index, config
        self.run_dir, self.eval_set = run_dir, eval_set
        self.progress = progress if progress is not None else Progress.create("auto" if config.progress else "off")
        self.device = model.features.device
        self.pad_id = int(model.tokenizer.pad_token_id or 0)
        self.step = 0
        self.history = History()
        self.last_eval: tuple[int, EvalResult] | None = None
        self.optimizer = torch.optim.AdamW(self._groups(), lr=config.lr, betas=(0.9, 0.999))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self._orders: dict[int, torch.Tensor] = {}

    def _groups(self) -> list[dict[str, Any]]:
        """Base weights at base_lr; row-masked matrices never decay (decay would move frozen rows)."""
        masked = {id(p) for p in self.model.row_masked}
        groups: dict[str, list[torch.nn.Parameter]] = {"adapted": [], "adaptor": [], "masked": [], "base": []}
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            if id(param) in masked:
                groups["masked"].append(param)
            elif name.startswith("llm.") and "lora_" not in name:
                groups["base"].append(param)
            elif name.startswith("adaptor."):
                groups["adaptor"].append(param)
            else:
                groups["adapted"].append(param)
        cfg = self.config
        settings = {
            "adapted": (cfg.weight_decay, cfg.lr),
            "adaptor": (cfg.weight_decay, cfg.adaptor_lr or cfg.lr),
            "masked": (0.0, cfg.lr),
            "base": (cfg.weight_decay, cfg.base_lr),
        }
        return [
            {"params": groups[name], "weight_decay": settings[name][0], "lr": settings[name][1]}
            for name in groups
            if groups[name]
        ]

    def _lr_factor(self, step: int) -> float:
        """Linear warmup, then cosine down to min_lr_ratio."""
        cfg = self.config
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    # -- data --------------------------------------------------------------------------------------
    def _micro_batch(self, number: int) -> Batch:
        per_epoch = len(self.data) // self.config.batch_size
        epoch, pos = divmod(number, per_epoch)
        if epoch not in self._orders:
            gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
            self._orders = {epoch: torch.randperm(len(self.data), generator=gen)}
        picks = self._orders[epoch][pos * self.config.batch_size : (pos + 1) * self.config.batch_size].tolist()
        return collate([self.data[i] for i in picks], [self.media_index[i] for i in picks], self.pad_id)

    # -- checkpoints -------------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def save_checkpoint(self) -> Path:
        directory = self.run_dir / "checkpoints"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"step-{self.step:07d}.pt"
        state = {
            "trainable": self.trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "rng": _rng_state(),
            "history": asdict(self.history),
            "config": asdict(self.config),
        }
        torch.save(state, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        (directory / LATEST).write_text(path.name + "\n")
        return path

    def resume(self, path: Path | None = None) -> bool:
        """Load ``path`` or the run's latest checkpoint; False when there is none."""
        if path is None:
            pointer = self.run_dir / "checkpoints" / LATEST
            if not pointer.is_file():
                return False
            path = pointer.parent / pointer.read_text().strip()
        state = torch.load(path, map_location="cpu", weights_only=False)  # our own file: RNG states are pickled
        saved, current = state["config"], asdict(self.config)
        changed = [k for k in _RESUME_KEYS if saved.get(k) != current[k]]
        if changed:
            raise ValueError(f"{path} was trained with other settings ({', '.join(changed)}); use a new run dir")
        load_trainable(self.model, state["trainable"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.history = History(**state["history"])
        _set_rng_state(state["rng"])
        log.info("resumed from %s at step %d", path, self.step)
        return True

    # -- the loop ----------------------------------------------------------------------------------
    def train(self, stop_at: int | None = None, on_eval: Callable[[EvalResult], None] | None = None) -> History:
        """Train up to ``config.steps`` (or ``stop_at``, to simulate an interruption in tests)."""
        with torch_threads(self.config.threads):
            return self._train(stop_at, on_eval)

    def _train(self, stop_at: int | None, on_eval: Callable[[EvalResult], None] | None) -> History:
        cfg = self.config
        end = min(cfg.steps, stop_at if stop_at is not None else cfg.steps)
        self.model.train()
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        params = [p for p in self.model.parameters() if p.requires_grad]
        started = time.perf_counter()
        with self.progress.stage("training", total=cfg.steps, unit="step", initial=self.step) as bar:
            self._loop(end, cfg, autocast, params, bar, on_eval)
        self.history.seconds += time.perf_counter() - started
        return self.history

    def _loop(
        self,
        end: int,
        cfg: TrainConfig,
        autocast: torch.autocast,
        params: list[torch.nn.Parameter],
        bar: Stage,
        on_eval: Callable[[EvalResult], None] | None,
    ) -> None:
        while self.step < end:
            total = 0.0
            for j in range(cfg.grad_accum):
                batch = self._micro_batch(self.step * cfg.grad_accum + j).to(self.device)
                with autocast:
                    loss = self.model.loss(batch) / cfg.grad_accum
                loss.backward()  # type: ignore[no-untyped-call]
                total += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            self.history.losses.append(total)
            bar.update(1, loss=total, lr=float(self.scheduler.get_last_lr()[0]))
            last = self.step == cfg.steps
            if self.eval_set is not None and (last or (cfg.eval_every and self.step % cfg.eval_every == 0)):
                bar.status(f"evaluating on {len(self.eval_set.examples)} examples")
                result = evaluate(self.model, self.eval_set.examples, self.eval_set.vectors, cfg.eval_max_tokens)
                bar.status()
                self.history.evals.append((self.step, result.as_dict()))
                self.last_eval = (self.step, result)
                bar.note(f"step {self.step}: " + json.dumps({k: round(v, 3) for k, v in result.as_dict().items()}))
                if on_eval is not None:
                    on_eval(result)
            if last or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0):
                self.save_checkpoint()


def load_trainable(model: ModaVerseModel, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    unknown = set(state) - set(params)
    if unknown:
        raise ValueError(f"checkpoint holds tensors this model lacks: {sorted(unknown)[:5]}")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)

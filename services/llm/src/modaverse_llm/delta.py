"""Apply a published weight delta to its base model (Vicuna-7B v0 = LLaMA-7B + ``lmsys/vicuna-7b-delta-v0``).

The procedure is FastChat's ``apply_delta``: for every tensor, ``target = base + delta``. The v0
delta's vocabulary is one token larger than LLaMA's (32001 vs 32000 rows: the added pad token), so
for ``embed_tokens`` and ``lm_head`` the base fills the leading rows and the extra rows are the
delta's alone. The output takes the delta's ``config.json``, ``generation_config.json`` and tokenizer
files.

Memory: the work is streamed shard by shard. Only one delta shard is open at a time; each of its
tensors is combined with the matching base tensor, read on its own (safetensors ``safe_open``) or
from the one base ``.bin`` shard kept loaded (``torch.load(mmap=True)`` where the file allows), and
the result (one output shard) is written before the next delta shard is opened. So a 7B model never
needs two full copies in memory: at most one delta shard, its output shard and one base ``.bin``
shard.

Inputs may be safetensors (``model.safetensors`` or shards + ``model.safetensors.index.json``) or the
older PyTorch layout the 2023 delta and LLaMA conversions were published in
(``pytorch_model.bin`` or ``pytorch_model-0000x-of-0000y.bin`` + ``pytorch_model.bin.index.json``).
Output: one safetensors shard per delta shard, plus ``model.safetensors.index.json`` when more than
one. ``rotary_emb.inv_freq`` buffers (saved by 2023 transformers, recomputed by today's) are dropped.
Every delta tensor must exist in the base and every base tensor in the delta (else: the wrong base).
Written to a staging folder beside ``out``, then renamed; ``out`` must not exist yet.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from safetensors.torch import save_file

Format = Literal["safetensors", "bin"]
Progress = Callable[[str], None]
TensorGetter = Callable[[str], torch.Tensor]

SAFE_INDEX, SAFE_SINGLE = "model.safetensors.index.json", "model.safetensors"
BIN_INDEX, BIN_SINGLE = "pytorch_model.bin.index.json", "pytorch_model.bin"
CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.json",
)
# Tensors whose rows may grow from base to delta (the added tokens).
_VOCAB_TENSORS = ("embed_tokens.weight", "lm_head.weight")
# Non-persistent buffers older checkpoints carry; not weights, so never part of the output.
_IGNORED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")


@dataclass(frozen=True)
class Checkpoint:
    """A model folder's weights: which file (shard) holds each tensor."""

    root: Path
    format: Format
    weight_map: dict[str, str]

    @property
    def shards(self) -> list[str]:
        return sorted(set(self.weight_map.values()))

    def names_in(self, shard: str) -> list[str]:
        return [name for name, file in self.weight_map.items() if file == shard]


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    """A ``.bin`` state dict, memory-mapped where the file allows (zipfile format), tensors only."""
    try:
        state: Any = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (pre-zipfile) serialization cannot be memory-mapped
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{path} is not a state dict of tensors")
    return state


def _safetensors_keys(path: Path) -> list[str]:
    handle: Any = safe_open(str(path), framework="pt")
    with handle as f:
        return list(f.keys())


def _read_index(path: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a weight index (no weight_map): {exc}") from exc
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise ValueError(f"{path}: weight_map must map tensor names to file names")
    return weight_map


def find_checkpoint(root: Path, role: str) -> Checkpoint:
    """Locate the weights in ``root`` (safetensors preferred over ``.bin``, as transformers does)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{role} folder {root} does not exist")
    fmt: Format
    if (root / SAFE_INDEX).is_file():
        fmt, weight_map = "safetensors", _read_index(root / SAFE_INDEX)
    elif (root / SAFE_SINGLE).is_file():
        fmt, weight_map = "safetensors", dict.fromkeys(_safetensors_keys(root / SAFE_SINGLE), SAFE_SINGLE)
    elif (root / BIN_INDEX).is_file():
        fmt, weight_map = "bin", _read_index(root / BIN_INDEX)
    elif (root / BIN_SINGLE).is_file():
        fmt, weight_map = "bin", dict.fromkeys(_load_bin(root / BIN_SINGLE), BIN_SINGLE)
    else:
        raise FileNotFoundError(
            f"no weights in {role} folder {root}: expected {SAFE_INDEX}, {SAFE_SINGLE}, {BIN_INDEX} or {BIN_SINGLE}"
        )
    for shard in sorted(set(weight_map.values())):
        if not (root / shard).is_file():
            raise FileNotFoundError(f"{role} shard {root / shard} (listed in its index) does not exist")
    return Checkpoint(root, fmt, {k: v for k, v in weight_map.items() if not _IGNORED.search(k)})


@contextmanager
def _open_shard(path: Path, fmt: Format, state: dict[str, torch.Tensor] | None = None) -> Iterator[TensorGetter]:
    """A getter for one tensor at a time of the shard at ``path`` (``state``: an already loaded ``.bin``)."""
    if fmt == "safetensors":
        handle: Any = safe_open(str(path), framework="pt")
        with handle as f:
            keys = set(f.keys())

            def get_safe(name: str) -> torch.Tensor:
                if name not in keys:
                    raise ValueError(f"{path} has no tensor {name} although its index lists it there")
                tensor: torch.Tensor = f.get_tensor(name)
                return tensor

            yield get_safe
        return
    loaded = _load_bin(path) if state is None else state

    def get_bin(name: str) -> torch.Tensor:
        if name not in loaded:
            raise ValueError(f"{path} has no tensor {name} although its index lists it there")
        return loaded[name]

    yield get_bin


class _BaseReader:
    """Reads base tensors by name; keeps at most one loaded ``.bin`` shard (safetensors: nothing)."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self._cached: tuple[str, dict[str, torch.Tensor]] | None = None

    @contextmanager
    def shard(self, shard: str) -> Iterator[TensorGetter]:
        path = self.checkpoint.root / shard
        if self.checkpoint.format == "safetensors":
            with _open_shard(path, "safetensors") as get:
                yield get
            return
        if self._cached is None or self._cached[0] != shard:
            self._cached = None  # drop the previous shard before loading the next
            self._cached = (shard, _load_bin(path))
        with _open_shard(path, "bin", self._cached[1]) as get:
            yield get


def combine(name: str, delta: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``base + delta`` computed in float32, returned in the delta's dtype. For the vocabulary tensors
    the delta may have more rows (same hidden size): the base fills the leading rows."""
    if not delta.is_floating_point() or not base.is_floating_point():
        raise ValueError(f"tensor {name}: expected floating point weights, got delta {delta.dtype}, base {base.dtype}")
    if delta.shape == base.shape:
        result = delta.to(torch.float32) + base.to(torch.float32)
    elif (
        name.endswith(_VOCAB_TENSORS)
        and delta.dim() == 2
        and base.dim() == 2
        and delta.shape[1] == base.shape[1]
        and delta.shape[0] > base.shape[0]
    ):
        result = delta.to(torch.float32, copy=True)
        result[: base.shape[0]] += base.to(torch.float32)
    else:
        allowed = (
            " (only embed_tokens/lm_head may grow, by rows, with the same hidden size)"
            if name.endswith(_VOCAB_TENSORS)
            else ""
        )
        raise ValueError(
            f"shape mismatch for tensor {name}: delta {tuple(delta.shape)} vs base {tuple(base.shape)}{allowed}"
        )
    return result.to(delta.dtype).contiguous()


def check_names(base: Checkpoint, delta: Checkpoint) -> None:
    """Every delta tensor must be in the base, and every base tensor in the delta."""
    missing = sorted(set(delta.weight_map) - set(base.weight_map))
    if missing:
        raise ValueError(
            f"{len(missing)} delta tensor(s) not in the base {base.root}: {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "")
        )
    unused = sorted(set(base.weight_map) - set(delta.weight_map))
    if unused:
        raise ValueError(
            f"{len(unused)} base tensor(s) not in the delta {delta.root} (wrong base?): {', '.join(unused[:5])}"
            + (" ..." if len(unused) > 5 else "")
        )


def _output_name(index: int, count: int) -> str:
    return SAFE_SINGLE if count == 1 else f"model-{index:05d}-of-{count:05d}.safetensors"


def _apply_shard(shard: str, delta: Checkpoint, reader: _BaseReader) -> dict[str, torch.Tensor]:
    names = delta.names_in(shard)
    by_base: dict[str, list[str]] = {}
    for name in names:
        by_base.setdefault(reader.checkpoint.weight_map[name], []).append(name)
    out: dict[str, torch.Tensor] = {}
    with _open_shard(delta.root / shard, delta.format) as get_delta:
        for base_shard in sorted(by_base):
            with reader.shard(base_shard) as get_base:
                for name in by_base[base_shard]:
                    out[name] = combine(name, get_delta(name), get_base(name))
    return {name: out[name] for name in names}


def _write_weights(base: Checkpoint, delta: Checkpoint, staging: Path, progress: Progress | None) -> None:
    reader = _BaseReader(base)
    shards = delta.shards
    weight_map: dict[str, str] = {}
    total_size = 0
    for i, shard in enumerate(shards, start=1):
        tensors = _apply_shard(shard, delta, reader)
        out_name = _output_name(i, len(shards))
        save_file(tensors, str(staging / out_name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, out_name))
        total_size += sum(t.numel() * t.element_size() for t in tensors.values())
        if progress is not None:
            progress(f"[{i}/{len(shards)}] {shard}: {len(tensors)} tensors -> {out_name}")
        del tensors
    if len(shards) > 1:
        index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
        (staging / SAFE_INDEX).write_text(json.dumps(index, indent=2) + "\n")


def apply_delta(base: Path, delta: Path, out: Path, *, progress: Progress | None = None) -> Path:
    """Write ``base + delta`` (see the module docstring) into ``out``, which must not exist yet.

    Streams one delta shard at a time: only that shard, its output and the matching base tensors
    (or one base ``.bin`` shard) are in memory at once. ``progress`` gets one line per shard.
    """
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new folder")
    delta_ckpt = find_checkpoint(delta, "delta")
    if not (delta / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in the delta folder {delta}")
    base_ckpt = find_checkpoint(base, "base")
    check_names(base_ckpt, delta_ckpt)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".apply-delta-", dir=out.parent))
    try:
        _write_weights(base_ckpt, delta_ckpt, staging, progress)
        for name in (*CONFIG_FILES, *TOKENIZER_FILES):
            if (delta / name).is_file():
                shutil.copyfile(delta / name, staging / name)
        os.rename(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out

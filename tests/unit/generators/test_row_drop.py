"""RowDropper on plain tensors: which rows each layout loses, in-place generator lists, and leaving a call
untouched when a value's rows are not laid out as expected."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from modaverse_generators.row_drop import RowDropper


class PNDMScheduler:  # named as diffusers' class: its per-row state is sliced by name
    def __init__(self, rows: int) -> None:
        self.ets = [torch.arange(rows).float(), torch.arange(rows).float() + 10]
        self.cur_sample: torch.Tensor | None = None
        self.cur_model_output: Any = 0


def dropper(rows: int) -> tuple[RowDropper, list[torch.Generator]]:
    generators = [torch.Generator().manual_seed(i) for i in range(rows)]
    pipe = SimpleNamespace(scheduler=PNDMScheduler(rows))
    return RowDropper(pipe, generators), generators


def test_gone_rows_leave_every_per_row_value() -> None:
    rows, generators = dropper(3)
    originals = list(generators)
    latents = torch.arange(3).float()
    guided = torch.arange(6).float()  # unconditional rows 0..2, then conditional rows 3..5
    out = rows.drop(lambda row: row == 1, {"latents": latents, "prompt_embeds": guided})
    assert out["latents"].tolist() == [0, 2]
    assert out["prompt_embeds"].tolist() == [0, 2, 3, 5]
    assert rows.pipe.scheduler.ets[1].tolist() == [10, 12]
    assert rows.pipe.scheduler.cur_sample is None and rows.pipe.scheduler.cur_model_output == 0
    assert generators == [originals[0], originals[2]]  # the pipeline's own list, edited in place
    assert rows.live == [0, 2]
    # Later drops index by the batch rows, not by position in the shrunken call.
    out = rows.drop(lambda row: row == 2, out)
    assert out["latents"].tolist() == [0] and out["prompt_embeds"].tolist() == [0, 3] and rows.live == [0]
    assert rows.results(["image 0"], 3) == ["image 0", None, None]


def test_nothing_is_dropped_when_no_row_or_every_row_is_gone() -> None:
    rows, generators = dropper(2)
    tensors = {"latents": torch.zeros(2)}
    assert rows.drop(lambda row: False, tensors) is tensors
    assert rows.drop(lambda row: True, tensors) is tensors  # the caller abandons the whole call instead
    assert rows.live == [0, 1] and len(generators) == 2


def test_an_unexpected_layout_leaves_the_call_untouched() -> None:
    rows, generators = dropper(3)
    tensors = {"latents": torch.zeros(3), "prompt_embeds": torch.zeros(5)}  # neither 3 nor 6 rows
    assert rows.drop(lambda row: row == 0, tensors) is tensors
    assert rows.live == [0, 1, 2] and len(generators) == 3
    assert rows.pipe.scheduler.ets[0].tolist() == [0, 1, 2]

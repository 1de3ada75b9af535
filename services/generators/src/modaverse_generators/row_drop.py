"""Dropping a gone caller's row from a running pipeline call, at the end of a denoising step.

A batch is one pipeline call. When one of its callers leaves (cancel, deadline), its row should stop
costing compute at the next step rather than run to the end with the others. Diffusers lets a
``callback_on_step_end`` replace the loop tensors it names in ``callback_on_step_end_tensor_inputs``,
so the callback hands them back without the gone rows. That is safe only where every per-row value the
loop reads later is one of those tensors or something sliced here as well:

- The pipeline (:data:`PIPELINES`): Stable Diffusion's text-to-image and image-to-image loops read
  ``latents`` (one row per prompt) and ``prompt_embeds`` (under classifier-free guidance the unconditional
  rows, then the conditional ones), nothing else per row, unless the UNet takes a guidance embedding
  (``time_cond_proj_dim``: its ``timestep_cond`` is per row and not exposed). TextToVideoSD and AudioLDM
  have only the legacy ``callback``, which cannot replace tensors, so their batches still stop only once
  every caller is gone; so does any pipeline not listed (its loop may read per-row values we cannot see).
- The scheduler (:data:`SCHEDULER_STATE`): multistep schedulers keep earlier model outputs per row, sliced
  here too. One that is not listed may keep state we do not know of: rows are not dropped under it.
- The per-row ``torch.Generator`` list (stochastic schedulers draw each row's noise from its own): the
  pipeline holds the very list we passed, so removing from it in place keeps each row on its generator.

Every remaining row then computes what it would have without the drop (up to float reassociation in
batched kernels, as between batched and single calls).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

# Pipeline class → the step-callback tensors that hold rows (all of the loop's per-row state).
PIPELINES: dict[str, tuple[str, ...]] = {
    "StableDiffusionPipeline": ("latents", "prompt_embeds"),
    "StableDiffusionImg2ImgPipeline": ("latents", "prompt_embeds"),
}

# Scheduler class → its attributes that hold rows (tensors, or lists of them) between steps.
SCHEDULER_STATE: dict[str, tuple[str, ...]] = {
    "DDIMScheduler": (),
    "DDPMScheduler": (),
    "EulerDiscreteScheduler": (),
    "EulerAncestralDiscreteScheduler": (),
    "PNDMScheduler": ("ets", "cur_sample", "cur_model_output"),
    "DPMSolverMultistepScheduler": ("model_outputs",),
    "UniPCMultistepScheduler": ("model_outputs", "last_sample"),
    "LMSDiscreteScheduler": ("derivatives",),
}


def tensor_inputs(pipe: Any) -> tuple[str, ...] | None:
    """The tensors a step callback needs to drop rows from ``pipe``'s calls; None when it cannot."""
    names = PIPELINES.get(type(pipe).__name__)
    if names is None or type(pipe.scheduler).__name__ not in SCHEDULER_STATE:
        return None
    if getattr(pipe.unet.config, "time_cond_proj_dim", None) is not None:
        return None
    return names


class _Layout(Exception):
    """A value's rows are not laid out as expected: leave the call as it is."""


def _select(value: Any, keep: Sequence[int], rows: int) -> Any:
    """``value`` with only the rows in ``keep``: a tensor of ``rows`` rows, or of twice that (guidance's
    unconditional half, then the conditional one); lists element by element; anything else is no row."""
    if isinstance(value, list):
        return [_select(v, keep, rows) for v in value]
    if not isinstance(value, torch.Tensor):
        return value  # None, or a scheduler's 0 before its first step
    if value.shape[0] == rows:
        index = list(keep)
    elif value.shape[0] == 2 * rows:
        index = [*keep, *(rows + k for k in keep)]
    else:
        raise _Layout(f"{tuple(value.shape)} for {rows} rows")
    return value[torch.tensor(index, device=value.device)]


class RowDropper:
    """The rows of one pipeline call: which batch rows it still computes, and dropping the gone ones."""

    def __init__(self, pipe: Any, generators: list[torch.Generator]) -> None:
        self.pipe = pipe
        self.generators = generators  # the list passed to the pipeline: edited in place
        self.live = list(range(len(generators)))  # batch index of each row the call still computes

    def drop(self, gone: Callable[[int], bool], tensors: dict[str, Any]) -> dict[str, Any]:
        """From a step callback: ``tensors`` without the rows whose batch index is ``gone`` (all of them
        gone: nothing is dropped; the caller abandons the whole call instead)."""
        keep = [pos for pos, row in enumerate(self.live) if not gone(row)]
        if not keep or len(keep) == len(self.live):
            return tensors
        rows = len(self.live)
        scheduler = self.pipe.scheduler
        state = SCHEDULER_STATE[type(scheduler).__name__]
        try:  # everything first, so a surprise leaves the call untouched
            out = {name: _select(value, keep, rows) for name, value in tensors.items()}
            sliced = {name: _select(getattr(scheduler, name), keep, rows) for name in state}
        except _Layout:
            return tensors
        for name, value in sliced.items():
            setattr(scheduler, name, value)
        self.generators[:] = [self.generators[pos] for pos in keep]
        self.live = [self.live[pos] for pos in keep]
        return out

    def results(self, outputs: Sequence[Any], batch_size: int) -> list[Any]:
        """The call's outputs (one per live row) in batch order; None for the rows that were dropped."""
        if len(outputs) != len(self.live):
            raise RuntimeError(f"{type(self.pipe).__name__} returned {len(outputs)} outputs for {len(self.live)} rows")
        by_row = dict(zip(self.live, outputs, strict=True))
        return [by_row.get(row) for row in range(batch_size)]

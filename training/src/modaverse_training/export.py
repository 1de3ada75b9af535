"""Export a trained model as exactly the artifacts the services load (no conversion step).

Layout (the tiny profile's ``<model_dir>/tiny`` layout, so exporting there makes the local stack
serve the trained model)::

    <out>/llm/base/                  LlamaForCausalLM + tokenizer, trained added-token rows inside
    <out>/llm/adapters/default/      peft LoRA adapter
    <out>/encoder/imagebind/         config.json + imagebind.pth (the frozen ImageBind, copied)
    <out>/encoder/adaptor/           adaptor_config.json + adaptor.safetensors
    <out>/export.json                what was exported, and the run's final metrics

Full profile: MODAVERSE_BASE_MODEL=<out>/llm/base, MODAVERSE_ADAPTERS='{"default": "<out>/llm/adapters/default"}',
MODAVERSE_IMAGEBIND_CHECKPOINT=<out>/encoder/imagebind/imagebind.pth, MODAVERSE_ADAPTOR_PATH=<out>/encoder/adaptor.
Each of ``llm/`` and ``encoder/`` is written to a staging folder and swapped in by rename.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from modaverse_encoder.artifacts import EncoderArtifacts
from modaverse_encoder.checkpoint import ARCH_CONFIG_NAME, CHECKPOINT_NAME
from modaverse_llm.compat import prime_transformers
from modaverse_llm.template import PROMPT_FORMAT

from .model import ModaVerseModel

EXPORT_INFO = "export.json"


def base_state(model: ModaVerseModel) -> dict[str, torch.Tensor]:
    """The base LLM's weights without LoRA (peft wraps each target as ``<name>.base_layer``)."""
    state = model.llm.get_base_model().state_dict()
    return {k.replace(".base_layer.", "."): v for k, v in state.items() if "lora_" not in k}


def _write_llm(model: ModaVerseModel, directory: Path) -> None:
    prime_transformers()
    from transformers import AutoModelForCausalLM

    source = model.llm.get_base_model()
    with torch.device("meta"):  # no second copy of the weights: they are assigned below
        fresh = AutoModelForCausalLM.from_config(source.config)  # type: ignore[no-untyped-call]
    fresh.load_state_dict(base_state(model), strict=True, assign=True)
    fresh.generation_config = source.generation_config
    fresh.save_pretrained(str(directory / "base"))
    model.tokenizer.save_pretrained(str(directory / "base"))
    model.llm.save_pretrained(str(directory / "adapters" / "default"))  # the adapter named "default"


def _write_encoder(model: ModaVerseModel, encoder: EncoderArtifacts, directory: Path) -> None:
    imagebind = directory / "imagebind"
    imagebind.mkdir(parents=True)
    try:
        os.link(encoder.checkpoint, imagebind / CHECKPOINT_NAME)  # ImageBind is frozen: share its bytes
    except OSError:
        shutil.copyfile(encoder.checkpoint, imagebind / CHECKPOINT_NAME)
    config = {"architecture": encoder.arch, "overrides": encoder.arch_overrides or {}}
    (imagebind / ARCH_CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    model.serving_adaptor().save(directory / "adaptor")


def _swap(staging: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def export(model: ModaVerseModel, encoder: EncoderArtifacts, out: Path, info: dict[str, Any] | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".export-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write_llm(model, staging / "llm")
        _write_encoder(model, encoder, staging / "encoder")
        _swap(staging / "llm", out / "llm")
        _swap(staging / "encoder", out / "encoder")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # The prompt format it was trained on: a later format change retrains instead of serving it stale.
    (out / EXPORT_INFO).write_text(
        json.dumps({**(info or {}), "prompt_format": PROMPT_FORMAT}, indent=2, default=str) + "\n"
    )
    return out

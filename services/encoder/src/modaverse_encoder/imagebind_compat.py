"""Import ImageBind's model code from ``imagebind-unofficial`` without its data module.

``imagebind/__init__.py`` imports ``imagebind.data``, which needs torchvision,
torchaudio and pytorchvideo (we replace it with :mod:`modaverse_encoder.transforms`).
The model code itself needs only ``timm.layers.DropPath`` and ``trunc_normal_``, and
timm imports torchvision at import time. So we register the ``imagebind`` package
without running its ``__init__``, and, when timm cannot be imported, provide those two
layers under ``timm.layers``: stochastic depth (identity at inference, where the
encoder always runs) and torch's own truncated-normal initialiser.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


def _trunc_normal_(
    tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0
) -> torch.Tensor:
    return nn.init.trunc_normal_(tensor, mean=mean, std=std, a=a, b=b)


@contextlib.contextmanager
def _timm_layers() -> Iterator[None]:
    """Provide ``timm.layers`` while ImageBind's modules import, if the real timm cannot load.

    The stand-in is removed again afterwards (ImageBind has bound the two names by then), so
    other libraries probing for timm (diffusers does) never see a half-made package."""
    try:
        import timm.layers

        yield
        return
    except Exception:
        pass
    timm = types.ModuleType("timm")
    layers = types.ModuleType("timm.layers")
    layers.DropPath = DropPath  # type: ignore[attr-defined]
    layers.trunc_normal_ = _trunc_normal_  # type: ignore[attr-defined]
    timm.layers = layers  # type: ignore[attr-defined]
    saved = {name: sys.modules.get(name) for name in ("timm", "timm.layers")}
    sys.modules["timm"], sys.modules["timm.layers"] = timm, layers
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _register_package() -> None:
    if "imagebind" in sys.modules:
        return
    spec = importlib.util.find_spec("imagebind")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "imagebind-unofficial is not installed; install it with `pip install --no-deps imagebind-unofficial==0.1.1`"
        )
    package = types.ModuleType("imagebind")
    package.__path__ = list(spec.submodule_search_locations)
    package.__file__ = spec.origin
    sys.modules["imagebind"] = package


def imagebind_model_module() -> Any:
    """The ``imagebind.models.imagebind_model`` module."""
    _register_package()
    with _timm_layers():
        return importlib.import_module("imagebind.models.imagebind_model")


def imagebind_preprocessors_module() -> Any:
    """The ``imagebind.models.multimodal_preprocessors`` module (its ``SimpleTokenizer``: CLIP's BPE)."""
    _register_package()
    with _timm_layers():
        return importlib.import_module("imagebind.models.multimodal_preprocessors")


def bpe_vocab_path() -> Path:
    """CLIP's BPE vocabulary shipped inside imagebind-unofficial."""
    _register_package()
    root = Path(sys.modules["imagebind"].__path__[0])
    return root / "bpe" / "bpe_simple_vocab_16e6.txt.gz"

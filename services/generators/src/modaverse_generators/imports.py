"""diffusers and transformers, imported on first use (slow) and typed Any: their constructors and
``from_pretrained`` loaders are untyped, so mypy --strict would reject every call."""

from __future__ import annotations

import importlib
from typing import Any


def diffusers() -> Any:
    return importlib.import_module("diffusers")


def transformers() -> Any:
    return importlib.import_module("transformers")

"""Shared fixtures: tiny model artifacts built once per session, offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model dir holding the tiny profile's artifacts (built here, never downloaded)."""
    from modaverse_encoder.tiny import ensure_tiny_encoder

    root = tmp_path_factory.mktemp("models")
    ensure_tiny_encoder(root)
    return root

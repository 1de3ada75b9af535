"""Shared fixtures: tiny model artifacts built once per session, offline."""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The in-process services' fixtures, for every test module (pytest reads pytest_plugins only in this, the
# rootdir's conftest). Helpers that are not fixtures are imported from these modules as usual. Only the
# services installed here: the vLLM virtualenv (`make test-vllm`) has the encoder and the LLM, not the generators.
_FIXTURES = {"encoder": "modaverse_encoder", "llm": "modaverse_llm", "generator": "modaverse_generators"}
pytest_plugins = [f"tests.integration.{name}_fixtures" for name, package in _FIXTURES.items() if find_spec(package)]
pytest_plugins.append("tests.integration.scripted_llm")  # the scripted LLM on a background loop (contracts only)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model dir holding the tiny profile's artifacts (built here, never downloaded)."""
    from modaverse_encoder.tiny import ensure_tiny_encoder

    root = tmp_path_factory.mktemp("models")
    ensure_tiny_encoder(root)
    return root

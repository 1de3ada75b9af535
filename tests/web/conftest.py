"""One real tiny stack and web front door for all of tests/web (started once per session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.in_process import BackgroundLoop

from .stack import Stack, start_stack, stop_stack

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"


@pytest.fixture(scope="session")
def stack(model_dir: Path) -> Iterator[Stack]:
    loop = BackgroundLoop()
    running = loop.run(start_stack(loop, model_dir), timeout=300)
    try:
        yield running
    finally:
        loop.run(stop_stack(running), timeout=60)
        loop.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modaverse_llm.compat import prime_transformers
from modaverse_llm.tiny import ensure_tiny_llm


@pytest.fixture(scope="session")
def tiny_llm(model_dir: Path) -> Path:
    return ensure_tiny_llm(model_dir)


@pytest.fixture(scope="session")
def tokenizer(tiny_llm: Path) -> Any:
    prime_transformers()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_llm / "base"))

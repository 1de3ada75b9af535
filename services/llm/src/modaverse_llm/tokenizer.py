"""Loading the LLM's tokenizer in either published layout, with the checks that keep it honest.

The release (2024) and Vicuna-7B v0 ship a *slow* LLaMA tokenizer: ``tokenizer.model``
(sentencepiece), ``tokenizer_config.json``, ``special_tokens_map.json``, ``added_tokens.json`` and
no ``tokenizer.json``. transformers builds its tokenizer from ``tokenizer.model`` with the
``sentencepiece`` package; folders saved by transformers ≥ 5 carry ``tokenizer.json`` instead. Both
must give the same ids (tests/unit/llm/test_release_parity.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modaverse_runtime.errors import FailedPrecondition

from .compat import prime_transformers


def load_tokenizer(path: str) -> Any:
    prime_transformers()
    from transformers import AutoTokenizer

    folder = Path(path)
    if (folder / "tokenizer.model").is_file() and not (folder / "tokenizer.json").is_file():
        try:
            import sentencepiece  # noqa: F401
        except ImportError as exc:  # transformers would otherwise ask for tiktoken
            raise FailedPrecondition(
                f"{path} holds a sentencepiece tokenizer (tokenizer.model): install the sentencepiece package"
            ) from exc
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, ImportError) as exc:
        raise FailedPrecondition(f"cannot load the tokenizer in {path}: {exc}") from exc


def check_vocabulary(tokenizer: Any, rows: int, where: str) -> None:
    """Every token id must have an embedding row, or the model would index past its table."""
    if len(tokenizer) > rows:
        raise FailedPrecondition(
            f"the tokenizer has {len(tokenizer)} tokens but {where} has {rows} embedding rows: "
            "tokenizer and weights come from different models"
        )

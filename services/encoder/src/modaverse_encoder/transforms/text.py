"""Text → ImageBind text input, as ImageBind's ``load_and_transform_text``.

The reference tokenizes each text with ``SimpleTokenizer(bpe_path=<the package's BPE vocabulary>)``:
CLIP's byte-pair encoding (ftfy clean-up, whitespace collapsed, lower case), context length 77: the start
token, at most 75 text tokens, the end token, zeros after. That tokenizer is model code (it lives beside
the model, not in the data module that needs torchvision), so it is used here unchanged and the token ids
are the reference's by construction. The text branch finds the end of a text by the end token's id, the
largest in the vocabulary (``argmax``).
"""

from __future__ import annotations

import threading
from typing import Any, Final

import torch

from ..imagebind_compat import bpe_vocab_path, imagebind_preprocessors_module

__all__ = ["CONTEXT_LENGTH", "TextTokenizer"]

CONTEXT_LENGTH: Final = 77  # ImageBind's text branch has 77 positions
# SimpleTokenizer memoises every word it has seen; a server sees unboundedly many, so the memo is reset
# beyond this many words (it only saves time: results do not depend on it).
_MAX_CACHED_WORDS: Final = 50_000


class TextTokenizer:
    """Text → int64 token ids of shape (77,), ImageBind's text input. Safe to call from several threads."""

    def __init__(self, context_length: int = CONTEXT_LENGTH) -> None:
        module = imagebind_preprocessors_module()
        self._tokenizer: Any = module.SimpleTokenizer(bpe_path=str(bpe_vocab_path()), context_length=context_length)
        self._initial_cache = dict(self._tokenizer.cache)  # the special tokens
        self._lock = threading.Lock()
        self.context_length = context_length

    def __call__(self, text: str) -> torch.Tensor:
        tokens: torch.Tensor = self._tokenizer(text)  # one text: (context_length,) int64
        if len(self._tokenizer.cache) > _MAX_CACHED_WORDS:
            with self._lock:
                if len(self._tokenizer.cache) > _MAX_CACHED_WORDS:
                    self._tokenizer.cache = dict(self._initial_cache)
        return tokens

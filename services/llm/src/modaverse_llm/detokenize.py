"""Incremental detokenization: each step decodes a few recent tokens, not the whole completion.

The offset method (as TGI and vLLM): ``read`` marks the tokens whose text is settled; the window
starts one settled chunk earlier (``prefix``) so that the tokenizer sees the context a token's
text depends on (SentencePiece's leading space, byte-level pieces of one character). The new
tokens' text is what decoding the window adds to decoding its settled part. While that text ends
in U+FFFD (a character still incomplete) nothing settles; the provisional text goes to the
``StopScanner``, which holds such characters back exactly as it did for a full decode.
"""

from __future__ import annotations

from collections.abc import Callable

REPLACEMENT = "\ufffd"
CONTEXT = 5  # tokens of context kept before the settled point after a full decode (vLLM's choice)


class IncrementalText:
    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self._prefix = 0  # window start
        self._read = 0  # tokens whose text is settled
        self._settled = ""  # text of ids[:read]
        self._prefix_text = ""  # text of ids[prefix:read], decoded alone

    def push(self, token: int) -> str:
        """Add one token; returns the completion's text so far (its tail may be provisional)."""
        self.ids.append(token)
        window = self._decode(self.ids[self._prefix :])
        new = window[len(self._prefix_text) :] if window.startswith(self._prefix_text) else None
        if new is None:  # the context changed the settled text's decoding: fall back to a full decode
            return self._settle_all()
        if new and not new.endswith(REPLACEMENT):
            self._settled += new
            self._prefix, self._read = self._read, len(self.ids)
            self._prefix_text = self._decode(self.ids[self._prefix : self._read])
            return self._settled
        return self._settled + new

    def _settle_all(self) -> str:
        text = self._decode(self.ids)
        if text.endswith(REPLACEMENT):
            return text
        self._settled = text
        self._prefix, self._read = max(0, len(self.ids) - CONTEXT), len(self.ids)
        self._prefix_text = self._decode(self.ids[self._prefix : self._read])
        return text

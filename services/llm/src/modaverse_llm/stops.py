"""Incremental detokenization with stop strings: what may be streamed now, and where to stop.

Text that could still turn into a stop string (a suffix that is a prefix of one) is held back, as is
a trailing incomplete UTF-8 character (one replacement char per byte so far), so no delta ever has to be taken back.
The stop string itself is not part of the output.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopScanner:
    def __init__(self, stop: Sequence[str]) -> None:
        self.stop = tuple(s for s in stop if s)
        self.sent = 0  # characters already streamed
        self.text = ""
        self.stopped = False

    def _held_back(self, text: str) -> int:
        hold = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), hold, -1):
                if text.endswith(s[:k]):
                    hold = k
                    break
        # An incomplete UTF-8 character decodes as one replacement char per byte so far: hold them all.
        hold = max(hold, len(text) - len(text.rstrip("\ufffd")))
        return hold

    def update(self, text: str) -> str:
        """Feed the full decoded completion so far; returns the new delta to stream."""
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            text = text[:cut]
            end = len(text)
        else:
            end = len(text) - self._held_back(text)
        self.text = text
        if end <= self.sent:
            return ""
        delta = text[self.sent : end]
        self.sent = end
        return delta

    def flush(self) -> str:
        """At the end (length, EOS, cancel): stream whatever was held back, except a trailing
        incomplete UTF-8 character, which can no longer complete (vLLM drops it the same way)."""
        self.text = self.text.rstrip("\ufffd")
        delta = self.text[self.sent :]
        self.sent = len(self.text)
        return delta

"""The answer text out of the LLM's streamed meta-response, as it is written.

The gateway streams what the LLM writes (``Modality: [TEXT] Prompt: It is a cat. ###``); an
OpenAI client expects ``delta.content`` to add up to ``message.content``, the parsed answer
(``It is a cat.``). The gateway's parser only runs on the whole text, so this filter is
conservative: it streams only the plain case, one leading ``[TEXT]`` block, and holds back anything
that could still turn out to be a marker (a partial ``###``, ``Modality:``, a flag at a line start,
trailing spaces). Everything else (media blocks, prose before a block, unparsable text) is held
and sent whole when the meta-response arrives. :meth:`AnswerStream.finish` sends what is missing;
if the parsed answer does not extend what was streamed (it should not happen), nothing more is
sent and the caller learns it from ``diverged`` (the meta-response extension carries the answer).
"""

from __future__ import annotations

import re

_TEXT_HEADER = re.compile(
    r"^\s*(?:modality\s*:\s*)?\[\s*text\s*\]\s*(?:[,;]?\s*model\s*[:=]\s*[A-Za-z0-9][\w.\-/:@]*\s*)?[,;]?\s*prompt\s*:",
    re.IGNORECASE,
)
_STOPS = re.compile(r"#{3}|modality\s*:|\n[^\S\n]*\[", re.IGNORECASE)
_MARKER_WORD = "modality"
_PARTIAL_MARKER = re.compile(r"m(?:o(?:d(?:a(?:l(?:i(?:t(?:y\s*)?)?)?)?)?)?)?$", re.IGNORECASE)  # "m" … "modality "
_UNDECIDED_CHARS = 120  # no [TEXT] header by then: hold everything until the end


class AnswerStream:
    def __init__(self) -> None:
        self.raw = ""
        self.sent = ""
        self.diverged = False
        self._body_start: int | None = None  # where the [TEXT] prompt starts in raw
        self._hold = False  # not the plain case: nothing is streamed before the end
        self._frozen = False  # a marker was seen in the body: nothing more is streamed

    def feed(self, delta: str) -> str:
        """Add raw text; returns answer text that is safe to send now ("" if none)."""
        self.raw += delta
        if self._hold or self._frozen:
            return ""
        if self._body_start is None and not self._decide():
            return ""
        assert self._body_start is not None
        body = self.raw[self._body_start :]
        stop = _STOPS.search(body)
        if stop is not None:
            body = body[: stop.start()]
            self._frozen = True
        else:
            body = self._without_partial_marker(body)
        visible = body.lstrip().lstrip(" \t:,-").strip()  # as the parser: "Prompt:\s*", those marks, strip()
        if not visible.startswith(self.sent):  # cannot happen with the rules above; be safe
            self._frozen = True
            return ""
        new = visible[len(self.sent) :]
        self.sent = visible
        return new

    def finish(self, answer: str) -> str:
        """The rest of ``answer`` (the parsed one) after what was already sent."""
        if answer.startswith(self.sent):
            rest = answer[len(self.sent) :]
            self.sent = answer
            return rest
        self.diverged = True
        return ""

    def _decide(self) -> bool:
        match = _TEXT_HEADER.match(self.raw)
        if match is not None:
            header = self.raw[: match.end()].lower()
            if header.count("modality") > 1 or "#" in header:  # odd (a model name running into a block)
                self._hold = True
                return False
            self._body_start = match.end()
            return True
        start = self.raw.lstrip().lower()
        could_be_header = start.startswith("[") or _MARKER_WORD.startswith(start[: len(_MARKER_WORD)])
        if not could_be_header or len(start) > _UNDECIDED_CHARS:
            self._hold = True
        return False

    @staticmethod
    def _without_partial_marker(body: str) -> str:
        """Cut a tail that may still become ``###``, ``Modality:`` or a flag at a line start."""
        while True:
            cut = body.rstrip("#")
            last_line = cut.rsplit("\n", 1)[-1] if "\n" in cut else None
            if last_line is not None and (not last_line.strip() or last_line.lstrip().startswith("[")):
                cut = cut[: len(cut) - len(last_line) - 1]
            partial = _PARTIAL_MARKER.search(cut)
            if partial is not None:
                cut = cut[: partial.start()]
            if cut == body:
                return body
            body = cut

"""Parsing the LLM's meta-response into invocations. Total: never raises, on any string.

The release's format is ``Modality: [IMAGE] Prompt: <prompt for the generator> ###``, where
``[TEXT]`` means the prompt *is* the answer. We accept that exactly and extend it:

- several blocks, each with its own modality and prompt, in order;
- several flags in one block (``Modality: [IMAGE] [AUDIO] Prompt: …``) give each generator the
  same prompt, as the release does;
- an optional model name per block: ``Modality: [IMAGE] Model: sdxl Prompt: …``;
- case and whitespace tolerant; brackets may be omitted after ``Modality:``; a missing ``Prompt:``
  takes the rest of the block (the release crashed there);
- a block starts only right after ``Modality:`` (anywhere), or at a bracketed flag at the start of
  the text or of a line (after optional whitespace), where ``Modality:`` may be omitted. A
  bracketed flag anywhere else is prose: ``Modality: [TEXT] Prompt: the tag [IMAGE] marks a
  picture`` is one text answer, with no image invocation;
- a media prompt ends at the end of its line; a ``[TEXT]`` prompt runs to the next block. Text that
  is not part of any block is kept as the answer;
- ``###`` ends the meta-response, unless another ``Modality:`` follows it (a backend or model that
  does not stop at ``###``): then it only separates blocks. ``###`` never reaches a prompt or the
  answer.

Anything unparsable falls back to a text answer with the raw text, and the raw meta-response is
always returned to clients.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum


class OutputModality(StrEnum):
    TEXT = "text"
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"


@dataclass(frozen=True)
class Invocation:
    modality: OutputModality
    prompt: str
    model: str = ""


@dataclass(frozen=True)
class ParsedResponse:
    raw: str
    answer: str  # text for the user: [TEXT] prompts and text outside blocks
    invocations: list[Invocation] = field(default_factory=list)  # media generations only, in order
    parsed: bool = True  # False: no block found, the whole text is the answer


_NAMES = "text|image|video|audio"
# A block starts at one or more bracketed flags right after "Modality:" (anywhere) or at the start of
# the text or of a line (after optional whitespace), or at "Modality: image" without brackets. A
# bracketed flag elsewhere (inside a [TEXT] answer's prose) starts nothing.
_BLOCK_START = re.compile(
    rf"(?:modality\s*:\s*|^[^\S\n]*)"
    rf"(?P<flags>\[\s*(?:{_NAMES})\s*\](?:[\s,&+]*(?:and\s+)?\[\s*(?:{_NAMES})\s*\])*)"
    rf"|modality\s*:\s*(?P<bare>(?:{_NAMES}))\b",
    re.IGNORECASE | re.MULTILINE,
)
_FLAG_NAME = re.compile(rf"\[\s*({_NAMES})\s*\]", re.IGNORECASE)
_MODEL = re.compile(r"^\s*[,;]?\s*model\s*[:=]\s*(?P<model>[A-Za-z0-9][\w.\-/:@]{0,127})", re.IGNORECASE)
_PROMPT = re.compile(r"prompt\s*:\s*", re.IGNORECASE)
_SEPARATOR = re.compile(r"#{3,}")
_NEXT_BLOCK = re.compile(r"\s*modality\s*:", re.IGNORECASE)
MAX_PROMPT_CHARS = 4000


def _strip_stops(raw: str) -> str:
    """Cut ``raw`` at the first ``###`` not followed by ``Modality:``; earlier ones become line breaks."""
    parts: list[str] = []
    pos = 0
    for sep in _SEPARATOR.finditer(raw):
        parts.append(raw[pos : sep.start()])
        if not _NEXT_BLOCK.match(raw, sep.end()):
            return "".join(parts)
        parts.append("\n")
        pos = sep.end()
    parts.append(raw[pos:])
    return "".join(parts)


def _flags(match: re.Match[str]) -> list[OutputModality]:
    if match.group("bare"):
        return [OutputModality(match.group("bare").lower())]
    return [OutputModality(name.lower()) for name in _FLAG_NAME.findall(match.group("flags"))]


def _clean(text: str) -> str:
    return " ".join(text.split())


def _split_body(body: str, text_block: bool) -> tuple[str, str, str]:
    """A block's body → (model, prompt, leftover answer text)."""
    model = ""
    m = _MODEL.match(body)
    if m:
        model = m.group("model")
        body = body[m.end() :]
    p = _PROMPT.search(body)
    if p:
        before, body = body[: p.start()], body[p.end() :]
        if not model:
            m = _MODEL.match(before)
            model = m.group("model") if m else ""
    body = body.lstrip(" \t:,-")
    if text_block:
        return model, body.strip(), ""
    line, _, rest = body.partition("\n")
    return model, line.strip(), rest.strip()


def parse_meta_response(raw: str) -> ParsedResponse:
    """Parse ``raw`` (whatever the LLM wrote). Never raises."""
    try:
        return _parse(raw)
    except Exception:  # pragma: no cover - defensive: the contract is totality
        return ParsedResponse(raw=raw, answer=raw.strip(), parsed=False)


def _parse(raw: str) -> ParsedResponse:
    text = _strip_stops(raw)
    starts = list(_BLOCK_START.finditer(text))
    if not starts:
        return ParsedResponse(raw=raw, answer=text.strip(), parsed=False)
    answer_parts = [text[: starts[0].start()].strip()]
    invocations: list[Invocation] = []
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        flags = _flags(match)
        text_block = all(f is OutputModality.TEXT for f in flags)
        model, prompt, leftover = _split_body(text[match.end() : end], text_block)
        prompt = prompt[:MAX_PROMPT_CHARS]
        for flag in flags:
            if flag is OutputModality.TEXT:
                answer_parts.append(prompt)
            elif prompt:
                invocations.append(Invocation(flag, _clean(prompt), model))
        answer_parts.append(leftover)
    answer = "\n".join(part for part in answer_parts if part)
    if not invocations and not answer:
        return ParsedResponse(raw=raw, answer=text.strip(), parsed=False)
    return ParsedResponse(raw=raw, answer=answer, invocations=invocations)

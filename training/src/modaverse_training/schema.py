"""The instruction-data schema: JSON lines, compatible with the release's fields and extended.

The release's record (one media item per modality, one invocation)::

    {"instruction": "...", "media": {"image": "a.png"}, "meta_response": {"modality": "image", "prompt": "..."}}

Extended records may hold several media (in order) and several invocations::

    {"instruction": "...", "media": [{"image": "a.png"}, {"audio": "b.wav"}],
     "meta_response": [{"modality": "image", "prompt": "..."}, {"modality": "audio", "prompt": "..."}],
     "task": "reasoning", "id": "shapes-000042"}

``meta_response`` modality ``text`` means the prompt is the answer itself. Media paths are
relative to the JSONL file's folder unless absolute. Reading validates every record and reports
errors as ``file:line: problem``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MEDIA_KINDS = ("image", "audio", "video")
OUTPUT_MODALITIES = ("text", "image", "audio", "video")
TASKS = ("input", "output", "reasoning", "")
MAX_INSTRUCTION_CHARS = 4000


class DataError(ValueError):
    """A record that does not fit the schema; the message starts with ``file:line:``."""


@dataclass(frozen=True)
class MediaRef:
    kind: str
    path: str


@dataclass(frozen=True)
class Invocation:
    modality: str
    prompt: str


@dataclass(frozen=True)
class Example:
    instruction: str
    media: tuple[MediaRef, ...] = ()
    meta_response: tuple[Invocation, ...] = ()
    task: str = ""
    id: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def meta_text(self) -> str:
        """The meta-response the LLM is trained to write (the release's format, one block per line)."""
        return "\n".join(f"Modality: [{inv.modality.upper()}] Prompt: {inv.prompt}" for inv in self.meta_response)

    def target_text(self) -> str:
        """The training target as text: the meta-response, then the release's `` ###`` stop."""
        return self.meta_text() + " ###"

    def to_record(self) -> dict[str, Any]:
        """The release's shape when it fits (≤ 1 item per kind, 1 invocation), else the extended one."""
        kinds = [m.kind for m in self.media]
        record: dict[str, Any] = {"instruction": self.instruction}
        if len(set(kinds)) == len(kinds):
            record["media"] = {m.kind: m.path for m in self.media}
        else:
            record["media"] = [{m.kind: m.path} for m in self.media]
        invs = [{"modality": i.modality, "prompt": i.prompt} for i in self.meta_response]
        record["meta_response"] = invs[0] if len(invs) == 1 else invs
        if self.task:
            record["task"] = self.task
        if self.id:
            record["id"] = self.id
        return record


def _media(value: Any) -> tuple[MediaRef, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise ValueError("'media' must be a map {kind: path} or a list of such maps")
    refs = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("each media entry must be a map {kind: path}")
        for kind, path in item.items():
            if kind not in MEDIA_KINDS:
                raise ValueError(f"media kind {kind!r} is not one of {MEDIA_KINDS}")
            if not isinstance(path, str) or not path:
                raise ValueError(f"media {kind} path must be a non-empty string")
            refs.append(MediaRef(kind, path))
    return tuple(refs)


def _invocations(value: Any) -> tuple[Invocation, ...]:
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list) or not items:
        raise ValueError("'meta_response' must be a map {modality, prompt} or a non-empty list of them")
    out = []
    for item in items:
        if not isinstance(item, dict) or set(item) - {"modality", "prompt"}:
            raise ValueError("each meta_response entry must be a map with 'modality' and 'prompt' only")
        modality, prompt = item.get("modality"), item.get("prompt")
        if modality not in OUTPUT_MODALITIES:
            raise ValueError(f"meta_response modality {modality!r} is not one of {OUTPUT_MODALITIES}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("meta_response prompt must be a non-empty string")
        if "###" in prompt or ("\n" in prompt and modality != "text"):
            raise ValueError("meta_response prompt must not contain '###' (or a newline, for media)")
        out.append(Invocation(modality, prompt.strip()))
    return tuple(out)


def parse_record(obj: Any) -> Example:
    if not isinstance(obj, dict):
        raise ValueError("a record must be a JSON object")
    unknown = set(obj) - {"instruction", "media", "meta_response", "task", "id"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    instruction = obj.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError("'instruction' must be a non-empty string")
    if len(instruction) > MAX_INSTRUCTION_CHARS:
        raise ValueError(f"'instruction' is longer than {MAX_INSTRUCTION_CHARS} characters")
    task = obj.get("task", "")
    if task not in TASKS:
        raise ValueError(f"'task' must be one of {TASKS[:-1]}")
    if "meta_response" not in obj:
        raise ValueError("'meta_response' is missing")
    return Example(
        instruction=instruction.strip(),
        media=_media(obj.get("media")),
        meta_response=_invocations(obj["meta_response"]),
        task=task,
        id=str(obj.get("id", "")),
    )


def read_jsonl(path: Path) -> list[Example]:
    examples = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                examples.append(parse_record(json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            except ValueError as exc:
                raise DataError(f"{path}:{number}: {exc}") from None
    return examples


def write_jsonl(path: Path, examples: Iterable[Example]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example.to_record(), ensure_ascii=False) + "\n")
            count += 1
    return count

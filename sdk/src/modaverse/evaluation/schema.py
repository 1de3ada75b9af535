"""Benchmark records (one JSON object per line) and reading them, with errors that name the line.

    {"id": "img-0001", "category": "text->image", "instruction": "Draw a red circle.",
     "media": [{"kind": "image", "path": "media/red_circle.png"}], "expected": "image",
     "reference": "a red circle",
     "round_trip": {"question": "What is in this image?", "attributes": {"colour": "red", "shape": "circle"}}}

``id``, ``instruction`` and ``expected`` are required; media paths are relative to the file's folder. The schema
is docs/eval.md's; the training side writes files in it too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MEDIA_KINDS = ("image", "audio", "video")
EXPECTED = ("text", *MEDIA_KINDS)
RECORD_KEYS = frozenset({"id", "category", "instruction", "media", "expected", "reference", "round_trip"})
MEDIA_KEYS = frozenset({"kind", "path"})
ROUND_TRIP_KEYS = frozenset({"question", "attributes"})


class DataError(Exception):
    """The benchmark file cannot be used: the message names the file and, where there is one, the line."""


@dataclass(frozen=True)
class MediaRef:
    kind: str  # image | audio | video
    path: Path  # resolved against the benchmark file's folder


@dataclass(frozen=True)
class RoundTrip:
    question: str
    attributes: dict[str, str]


@dataclass(frozen=True)
class EvalRecord:
    id: str
    instruction: str
    expected: str
    line: int
    category: str = ""
    media: tuple[MediaRef, ...] = ()
    reference: str | None = None
    round_trip: RoundTrip | None = None
    # The line's object as written: stored beside each result, and hashed to notice a record that changed.
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.raw)


def fingerprint(raw: dict[str, Any]) -> str:
    """A short hash of a record's object (key order does not matter)."""
    text = json.dumps(raw, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _string(obj: dict[str, Any], key: str, where: str, *, required: bool) -> str | None:
    if key not in obj:
        if required:
            raise DataError(f"{where}: missing required key {key!r}")
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise DataError(f"{where}: {key!r} must be a string, not {type(value).__name__}")
    if required and not value.strip():
        raise DataError(f"{where}: {key!r} is empty")
    return value


def _unknown(obj: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise DataError(f"{where}: unknown key{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))}")


def _media(value: object, folder: Path, where: str, check_files: bool) -> tuple[MediaRef, ...]:
    if not isinstance(value, list):
        raise DataError(f'{where}: \'media\' must be a list of {{"kind", "path"}} objects')
    refs = []
    for n, item in enumerate(value):
        at = f"{where}: media[{n}]"
        if not isinstance(item, dict):
            raise DataError(f"{at} must be an object with 'kind' and 'path'")
        _unknown(item, MEDIA_KEYS, at)
        kind = _string(item, "kind", at, required=True)
        path = _string(item, "path", at, required=True)
        assert kind is not None and path is not None
        if kind not in MEDIA_KINDS:
            raise DataError(f"{at}: unknown kind {kind!r} (one of {', '.join(MEDIA_KINDS)})")
        resolved = folder / path
        if check_files and not resolved.is_file():
            raise DataError(f"{at}: media file {path} not found (looked for {resolved})")
        refs.append(MediaRef(kind, resolved))
    return tuple(refs)


def _round_trip(value: object, expected: str, where: str) -> RoundTrip:
    at = f"{where}: round_trip"
    if expected == "text":
        raise DataError(f"{at} needs a generated item to ask about: only for expected image, audio or video")
    if not isinstance(value, dict):
        raise DataError(f"{at} must be an object with 'question' and 'attributes'")
    _unknown(value, ROUND_TRIP_KEYS, at)
    question = _string(value, "question", at, required=True)
    assert question is not None
    attributes = value.get("attributes")
    if not isinstance(attributes, dict) or not attributes:
        raise DataError(f"{at}: 'attributes' must be a non-empty object of name -> expected word")
    for name, word in attributes.items():
        if not isinstance(word, str) or not word.strip():
            raise DataError(f"{at}: attribute {name!r} must be a non-empty string")
    return RoundTrip(question, dict(attributes))


def parse_record(obj: object, line: int, folder: Path, *, check_files: bool = True, source: str = "") -> EvalRecord:
    """One line's object as a record; DataError naming ``source:line`` when it does not fit the schema."""
    where = f"{source}:{line}" if source else f"line {line}"
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, not {type(obj).__name__}")
    _unknown(obj, RECORD_KEYS, where)
    record_id = _string(obj, "id", where, required=True)
    instruction = _string(obj, "instruction", where, required=True)
    expected = _string(obj, "expected", where, required=True)
    assert record_id is not None and instruction is not None and expected is not None
    if expected not in EXPECTED:
        raise DataError(f"{where}: 'expected' must be one of {', '.join(EXPECTED)}, not {expected!r}")
    category = _string(obj, "category", where, required=False) or ""
    reference = _string(obj, "reference", where, required=False)
    media = _media(obj["media"], folder, where, check_files) if "media" in obj else ()
    round_trip = _round_trip(obj["round_trip"], expected, where) if "round_trip" in obj else None
    return EvalRecord(record_id, instruction, expected, line, category, media, reference, round_trip, dict(obj))


def parse_lines(text: str, folder: Path, *, check_files: bool = True, source: str = "") -> list[EvalRecord]:
    """Every record of a JSONL text (blank lines skipped); DataError on the first problem."""
    records: list[EvalRecord] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}" if source else f"line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        record = parse_record(obj, number, folder, check_files=check_files, source=source)
        if record.id in seen:
            raise DataError(f"{where}: duplicate id {record.id!r} (first on line {seen[record.id]})")
        seen[record.id] = number
        records.append(record)
    if not records:
        raise DataError(f"{source or 'the benchmark'}: no records")
    return records


def load_records(path: str | Path, *, check_files: bool = True) -> list[EvalRecord]:
    """The records of a benchmark file, checked (media files must exist unless ``check_files`` is False)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{p}: is a directory, not a JSONL file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not UTF-8 text ({exc.reason})") from None
    return parse_lines(text, p.resolve().parent, check_files=check_files, source=str(p))

"""``DIR/results.jsonl``: one JSON line per finished record, appended as each finishes (so a run can resume).

The last line of an id wins (a retried or changed record is appended again). A line cut short by a killed run
is dropped when the file is opened (and its record is run again); the next line starts on a fresh line.
Vectors are stored as base64 of little-endian float32 (:func:`encode_vector`), so the report, the shuffled
baseline included, can be recomputed from this file alone.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

RESULTS_FILE = "results.jsonl"


def encode_vector(vector: npt.NDArray[Any]) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(text: str) -> npt.NDArray[np.float32]:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)


@dataclass
class Loaded:
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> its last line
    dropped: int = 0  # lines that were not a result (cut short, not JSON, no id)
    truncated: bool = False  # the file ended in a line cut short (removed from the file)


class ResultStore:
    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / RESULTS_FILE

    def load(self, *, repair: bool = True) -> Loaded:
        """Every stored result; with ``repair``, a last line cut short is cut off the file."""
        loaded = Loaded()
        if not self.path.is_file():
            return loaded
        data = self.path.read_bytes()
        complete_end = data.rfind(b"\n") + 1  # the bytes up to the end of the last complete line
        lines = data[:complete_end].split(b"\n")[:-1] if complete_end else []
        tail = data[complete_end:]
        if tail.strip():
            loaded.truncated = True
            loaded.dropped += 1
        if tail and repair:
            with self.path.open("r+b") as handle:
                handle.truncate(complete_end)
        for raw in lines:
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                loaded.dropped += 1
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
                loaded.dropped += 1
                continue
            loaded.results[obj["id"]] = obj
        return loaded

    def append(self, result: dict[str, Any]) -> None:
        """One line, written and flushed at once (a cancelled run never leaves half a line)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(result, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()

"""The test split as a `modaverse eval` benchmark file (docs/eval.md has the schema).

Every test example becomes a record (instruction, media copied beside the file, expected modality,
reference prompt or answer). Image requests for a shapes-world caption ("a red circle") also carry a
round trip: the generated image is shown to the model again with a describing question, and the answer
must name the colour and the shape. The question is one the model was trained to answer for that
caption (a held-out wording would measure the describer's generalisation, not the drawing). One extra
"draw" record per colour × shape, in that caption's held-out wording, makes sure every combination is
drawn at least once.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modaverse_runtime.samples import SHAPES

from .builder import CREATE, DESCRIBE, HeldOutCombos
from .schema import Example
from .shapes import COLORS

BENCHMARK_FILE = "shapes-test.jsonl"


def round_trip_question(caption: str, combos: HeldOutCombos) -> str:
    """The first describing question training paired with ``caption`` ("What is in this image?" unless held out)."""
    return combos.templates("describe/image", caption, DESCRIBE["image"], "train")[0]


def shape_attributes(caption: str) -> dict[str, str] | None:
    """{"colour", "shape"} of a shapes-world image caption ("a red circle"), or None for any other caption."""
    words = caption.lower().rstrip(".").split()
    if len(words) == 3 and words[0] in {"a", "an"} and words[1] in COLORS and words[2] in SHAPES:
        return {"colour": words[1], "shape": words[2]}
    return None


def _record(ex: Example, media_prefix: str, combos: HeldOutCombos) -> dict[str, Any]:
    answer = ex.meta_response[0]
    inputs = "+".join(m.kind for m in ex.media) or "text"
    record: dict[str, Any] = {
        "id": ex.id,
        "category": f"{inputs}->{answer.modality}",
        "instruction": ex.instruction,
        "expected": answer.modality,
        "reference": answer.prompt,
    }
    if ex.media:
        record["media"] = [{"kind": m.kind, "path": f"{media_prefix}/{m.path}"} for m in ex.media]
    attributes = shape_attributes(answer.prompt) if answer.modality == "image" else None
    if attributes:
        record["round_trip"] = {"question": round_trip_question(answer.prompt, combos), "attributes": attributes}
    return record


def draw_records(combos: HeldOutCombos) -> list[dict[str, Any]]:
    """One image request per colour × shape, worded with the caption's held-out "create" template."""
    records = []
    for colour in COLORS:
        for shape in SHAPES:
            caption = f"a {colour} {shape}"
            (template,) = combos.templates("create/image", caption, CREATE["image"], "test")
            records.append(
                {
                    "id": f"draw-{colour}-{shape}",
                    "category": "round trip",
                    "instruction": template.format(c=caption),
                    "expected": "image",
                    "reference": caption,
                    "round_trip": {
                        "question": round_trip_question(caption, combos),
                        "attributes": {"colour": colour, "shape": shape},
                    },
                }
            )
    return records


def write_benchmark(test: Sequence[Example], world: Path, out: Path, combos: HeldOutCombos) -> Path:
    """Write ``out/shapes-test.jsonl`` and copy the media it names from ``world`` into ``out/media``."""
    if out.exists():
        shutil.rmtree(out)
    (out / "media").mkdir(parents=True)
    for path in sorted({m.path for ex in test for m in ex.media}):
        target = out / "media" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(world / path, target)
    records = [_record(ex, "media", combos) for ex in test] + draw_records(combos)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    (out / BENCHMARK_FILE).write_text(text, encoding="utf-8")
    return out / BENCHMARK_FILE

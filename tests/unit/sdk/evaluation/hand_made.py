"""Hand-made benchmark records and results.jsonl lines (as the runner writes them), for the report tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from modaverse.evaluation.schema import EvalRecord, fingerprint, load_records
from modaverse.evaluation.store import encode_vector

RECORDS: list[dict[str, Any]] = [
    {"id": "t1", "category": "text->text", "instruction": "Say hi.", "expected": "text", "reference": "Hi there."},
    {"id": "i1", "category": "text->image", "instruction": "Draw a red circle.", "expected": "image",
     "reference": "a red circle",
     "round_trip": {"question": "What is this?", "attributes": {"colour": "red", "shape": "circle"}}},
    {"id": "i2", "category": "text->image", "instruction": "Draw a blue square.", "expected": "image",
     "reference": "a blue square",
     "round_trip": {"question": "What is this?", "attributes": {"colour": "blue", "shape": "square"}}},
    {"id": "a1", "category": "text->audio", "instruction": "A bell.", "expected": "audio", "reference": "a bell"},
    {"id": "v1", "category": "text->video", "instruction": "A square sliding.", "expected": "video"},
]  # fmt: skip


def write_records(tmp_path: Path, records: list[dict[str, Any]] | None = None) -> list[EvalRecord]:
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records or RECORDS))
    return load_records(path)


def vector(*values: float) -> str:
    return encode_vector(np.array(values, dtype=np.float32))


def result(
    raw: dict[str, Any],
    routed: str,
    *,
    answer: str = "",
    prompts: tuple[tuple[str, str], ...] = (),
    chat_error: dict[str, str] | None = None,
    invocation_errors: dict[int, dict[str, str]] | None = None,
    timings: tuple[float | None, float | None, float] = (0.1, 0.2, 1.0),
    agreement: dict[str, Any] | None = None,
    round_trip: dict[str, Any] | None = None,
) -> dict[str, Any]:
    errors = invocation_errors or {}
    invocations = [
        {
            "index": i,
            "modality": modality,
            "prompt": prompt,
            "model": f"{modality}-tiny",
            "started_s": 0.3,
            "seen_s": None if i in errors else 0.5 + i,
            "reported_s": None if i in errors else 0.4 + i,
            "file": None if i in errors else f"media/{raw['id']}-{i}.png",
            "error": errors.get(i),
        }
        for i, (modality, prompt) in enumerate(prompts)
    ]
    failed = bool(chat_error) or bool(round_trip and round_trip.get("error")) or bool(agreement and agreement["error"])
    return {
        "id": raw["id"],
        "fingerprint": fingerprint(raw),
        "record": raw,
        "routed": routed,
        "meta_response": None if chat_error else "Modality: ...",
        "parsed": True,
        "answer": answer,
        "invocations": invocations,
        "timings": {"first_token_s": timings[0], "meta_response_s": timings[1], "total_s": timings[2]},
        "chat_error": chat_error,
        "agreement": agreement,
        "round_trip": round_trip,
        "failed": failed,
    }


def results() -> list[dict[str, Any]]:
    """t1 right (exact), i1 right (F1 < 1), i2 routed to text, a1 failed chat, v1 routed right with a failed
    generator; agreement on i1 and v1 only (one image item: its baseline is undefined)."""
    t1, i1, i2, a1, v1 = RECORDS
    return [
        result(t1, "text", answer="hi there", agreement={"items": [], "error": None}),
        result(
            i1,
            "image",
            prompts=(("image", "a big red circle"),),
            agreement={
                "encoder_id": "enc-1",
                "items": [
                    {
                        "index": 0,
                        "modality": "image",
                        "prompt": "a big red circle",
                        "matched": 1.0,
                        "item_vector": vector(1, 0),
                        "text_vector": vector(1, 0),
                    }
                ],
                "error": None,
            },
            round_trip={
                "question": "What is this?",
                "file": "media/i1-0.png",
                "answer": "A red square.",
                "hits": {"colour": True, "shape": False},
                "error": None,
                "skipped": None,
                "total_s": 0.7,
            },
        ),
        result(
            i2,
            "text",
            answer="I cannot draw.",
            agreement={"items": [], "error": None},
            round_trip={
                "question": "What is this?",
                "file": None,
                "answer": None,
                "hits": {},
                "error": None,
                "skipped": "no generated item",
                "total_s": None,
            },
        ),
        result(
            a1, "error", chat_error={"code": "INVALID_ARGUMENT", "message": "text too long"}, timings=(None, None, 0.01)
        ),
        result(
            v1,
            "video",
            prompts=(("video", "a square sliding"), ("image", "a square")),
            invocation_errors={1: {"code": "NOT_FOUND", "message": "no route for image"}},
            agreement={"items": [], "error": {"code": "UNIMPLEMENTED", "message": "no Embed"}},
        ),
    ]


def write_results(out_dir: Path, lines: list[dict[str, Any]]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path

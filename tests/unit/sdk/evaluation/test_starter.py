"""The starter benchmark (eval/starter.jsonl) reads, and eval/make_media.py makes every file it names."""

from __future__ import annotations

import importlib.util
import shutil
from collections import Counter
from pathlib import Path
from types import ModuleType

from modaverse.evaluation.schema import load_records

ROOT = Path(__file__).resolve().parents[4]
CATEGORIES = {
    "text->text",
    "text->image",
    "image->text",
    "image->audio",
    "text->video",
    "image->image",
    "audio->text",
    "audio->image",
    "video->text",
    "mixed",
}


def make_media() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_media", ROOT / "eval" / "make_media.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_starter_covers_the_categories_and_names_only_media_the_script_makes() -> None:
    records = load_records(ROOT / "eval" / "starter.jsonl", check_files=False)
    assert 35 <= len(records) <= 45
    assert set(Counter(r.category for r in records)) == CATEGORIES
    named = {m.path.relative_to(ROOT / "eval" / "media").as_posix() for r in records for m in r.media}
    assert named == set(make_media().MEDIA)
    assert sum(r.reference is not None for r in records) >= 20
    assert any(r.round_trip is not None for r in records)


def test_the_media_are_small_deterministic_and_make_the_starter_valid(tmp_path: Path) -> None:
    module = make_media()
    shutil.copyfile(ROOT / "eval" / "starter.jsonl", tmp_path / "starter.jsonl")
    first = {p.name: p.read_bytes() for p in module.make(tmp_path / "media")}
    assert all(0 < len(data) <= 50_000 for data in first.values())
    assert len(load_records(tmp_path / "starter.jsonl")) >= 35  # every media file now exists
    again = {p.name: p.read_bytes() for p in module.make(tmp_path / "again")}
    assert again == first

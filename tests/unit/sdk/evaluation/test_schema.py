"""Benchmark files: the schema, and errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modaverse.evaluation.schema import DataError, load_records, parse_lines


def write(tmp_path: Path, *lines: object) -> Path:
    path = tmp_path / "bench.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def error(tmp_path: Path, *lines: object) -> str:
    with pytest.raises(DataError) as exc:
        load_records(write(tmp_path, *lines))
    return str(exc.value)


OK = {"id": "t1", "instruction": "Hello", "expected": "text"}


def test_a_full_record_reads_with_media_resolved_against_the_files_folder(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "c.png").write_bytes(b"png")
    record = {
        "id": "img-1",
        "category": "text->image",
        "instruction": "Draw a red circle.",
        "media": [{"kind": "image", "path": "media/c.png"}],
        "expected": "image",
        "reference": "a red circle",
        "round_trip": {"question": "What is in this image?", "attributes": {"colour": "red", "shape": "circle"}},
    }
    path = write(tmp_path, record, "", OK)  # a blank line is skipped
    first, second = load_records(path)
    assert first.id == "img-1" and first.category == "text->image" and first.line == 1
    assert first.media[0].kind == "image" and first.media[0].path == tmp_path.resolve() / "media" / "c.png"
    assert first.round_trip is not None and first.round_trip.attributes == {"colour": "red", "shape": "circle"}
    assert first.raw == record
    assert (second.id, second.line, second.category, second.reference, second.media) == ("t1", 3, "", None, ())
    assert first.fingerprint != second.fingerprint
    assert first.fingerprint == parse_lines(json.dumps(record), tmp_path).pop().fingerprint  # key order is irrelevant


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    message = error(tmp_path, OK, '{"id": "x",')
    assert message.startswith(f"{tmp_path / 'bench.jsonl'}:2: invalid JSON")


def test_unknown_keys_name_the_line_and_the_key(tmp_path: Path) -> None:
    assert error(tmp_path, OK, {**OK, "id": "t2", "answer": "x"}).endswith(":2: unknown key 'answer'")
    media = {**OK, "id": "t3", "media": [{"kind": "image", "path": "a.png", "mime": "image/png"}]}
    assert error(tmp_path, media).endswith(":1: media[0]: unknown key 'mime'")


def test_an_unknown_media_kind_is_an_error(tmp_path: Path) -> None:
    message = error(tmp_path, {**OK, "media": [{"kind": "pdf", "path": "a.pdf"}]})
    assert message.endswith(":1: media[0]: unknown kind 'pdf' (one of image, audio, video)")


def test_a_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    assert error(tmp_path, OK, {**OK, "id": "t2"}, OK).endswith(":3: duplicate id 't1' (first on line 1)")


def test_a_missing_media_file_is_an_error_unless_files_are_not_checked(tmp_path: Path) -> None:
    line = {**OK, "media": [{"kind": "audio", "path": "media/missing.wav"}]}
    assert ":1: media[0]: media file media/missing.wav not found" in error(tmp_path, line)
    assert load_records(write(tmp_path, line), check_files=False)[0].media[0].kind == "audio"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ({"instruction": "x", "expected": "text"}, "missing required key 'id'"),
        ({"id": "a", "expected": "text"}, "missing required key 'instruction'"),
        ({"id": "a", "instruction": " ", "expected": "text"}, "'instruction' is empty"),
        ({"id": "a", "instruction": "x", "expected": "pdf"}, "'expected' must be one of text, image, audio, video"),
        ({"id": 3, "instruction": "x", "expected": "text"}, "'id' must be a string, not int"),
        ({**OK, "media": "a.png"}, "'media' must be a list"),
        (
            {**OK, "round_trip": {"question": "q", "attributes": {"c": "red"}}},
            "only for expected image, audio or video",
        ),
        ({**OK, "expected": "image", "round_trip": {"question": "q", "attributes": {}}}, "non-empty object"),
        ({**OK, "expected": "image", "round_trip": {"question": "q", "attributes": {"c": 1}}}, "'c' must be"),
        ([1, 2], "expected a JSON object, not list"),
    ],
)
def test_schema_errors(tmp_path: Path, line: object, expected: str) -> None:
    message = error(tmp_path, line)
    assert ":1: " in message and expected in message


def test_a_missing_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_records(tmp_path / "nope.jsonl")
    assert error(tmp_path, "").endswith("no records")

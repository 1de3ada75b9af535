from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from modaverse_gateway.metaresponse import parse_meta_response
from modaverse_training.builder import CaptionedMedia, build_examples, read_captions
from modaverse_training.schema import DataError, Example, Invocation, MediaRef, read_jsonl, write_jsonl
from modaverse_training.shapes import WorldCounts, generate_world

RELEASE = {
    "instruction": "Draw it",
    "media": {"image": "a.png"},
    "meta_response": {"modality": "image", "prompt": "a cat"},
}


def test_release_records_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(RELEASE) + "\n")
    (ex,) = read_jsonl(path)
    assert ex == Example("Draw it", (MediaRef("image", "a.png"),), (Invocation("image", "a cat"),))
    write_jsonl(tmp_path / "out.jsonl", [ex])
    assert json.loads((tmp_path / "out.jsonl").read_text()) == RELEASE


def test_extended_records_with_several_media_and_invocations(tmp_path: Path) -> None:
    ex = Example(
        "compare",
        (MediaRef("image", "a.png"), MediaRef("image", "b.png"), MediaRef("audio", "c.wav")),
        (Invocation("image", "x"), Invocation("audio", "y")),
        task="reasoning",
        id="e1",
    )
    write_jsonl(tmp_path / "d.jsonl", [ex])
    assert read_jsonl(tmp_path / "d.jsonl") == [ex]
    # the training target is the release's format and our parser reads it back
    parsed = parse_meta_response(ex.target_text())
    assert [(i.modality.value, i.prompt) for i in parsed.invocations] == [("image", "x"), ("audio", "y")]


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({**RELEASE, "instruction": " "}), "'instruction'"),
        (json.dumps({**RELEASE, "media": {"smell": "x"}}), "media kind 'smell'"),
        (json.dumps({**RELEASE, "meta_response": {"modality": "smell", "prompt": "x"}}), "modality 'smell'"),
        (json.dumps({**RELEASE, "meta_response": {"modality": "image", "prompt": "a ### b"}}), "'###'"),
        (json.dumps({**RELEASE, "meta_response": []}), "non-empty list"),
        (json.dumps({k: v for k, v in RELEASE.items() if k != "meta_response"}), "missing"),
        (json.dumps({**RELEASE, "colour": "red"}), "unknown fields"),
    ],
)
def test_bad_records_report_file_and_line(tmp_path: Path, line: str, fragment: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(RELEASE) + "\n\n" + line + "\n")
    with pytest.raises(DataError, match=rf"d\.jsonl:3: .*{fragment}"):
        read_jsonl(path)


def test_caption_files(tmp_path: Path) -> None:
    path = tmp_path / "caps.tsv"
    path.write_text('# comment\na.png\ta  red   circle\nb.png,"a blue, square"\n')
    assert read_captions(path, "image") == [
        CaptionedMedia("image", "a.png", "a red circle"),
        CaptionedMedia("image", "b.png", "a blue, square"),
    ]
    path.write_text("a.png\ta cat\njustapath\n")
    with pytest.raises(DataError, match=r"caps\.tsv:2:"):
        read_captions(path, "image")


def test_builder_is_deterministic_and_follows_the_mix() -> None:
    items = [CaptionedMedia(k, f"{k}{i}", f"thing {i}") for k in ("image", "audio", "video") for i in range(10)]
    a = build_examples(items, 2000, seed=3)
    assert a == build_examples(items, 2000, seed=3)
    assert a != build_examples(items, 2000, seed=4)
    tasks = Counter(ex.task for ex in a)
    assert abs(tasks["input"] / 2000 - 0.4) < 0.05
    assert abs(tasks["reasoning"] / 2000 - 0.2) < 0.05
    for ex in a:
        (inv,) = ex.meta_response
        if ex.task == "input":
            assert inv.modality == "text"
            assert len(ex.media) == 1
        elif ex.task == "output":
            assert not ex.media
            assert inv.prompt in ex.instruction
        else:
            assert inv.modality != ex.media[0].kind
    only_output = build_examples(items, 50, mix={"output": 1.0}, seed=0)
    assert {ex.task for ex in only_output} == {"output"}
    with pytest.raises(DataError, match="mix"):
        build_examples(items, 5, mix={"juggling": 1.0})


def test_shapes_world_is_real_media_and_deterministic(tmp_path: Path) -> None:
    counts = WorldCounts(images=12, audio=5, video=2)
    files = generate_world(tmp_path / "a", counts, seed=1)
    ticks: list[int] = []  # the progress callback (make demo's display) sees every file and changes nothing
    generate_world(tmp_path / "b", counts, seed=1, on_file=lambda: ticks.append(1))
    assert len(ticks) == 12 + 5 + 2
    for name in ("images/img_00003.png", "audio/aud_00004.wav", "video/vid_00001.mp4", "images.tsv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    images = read_captions(files["image"], "image")
    assert len(images) == 12
    assert images[0].caption == "a red circle"
    assert {c.caption for c in read_captions(files["audio"], "audio")} == {
        "a low hum",
        "a high beep",
        "a rising chirp",
        "white noise",
        "a ticking clock",
    }
    from modaverse_runtime.media import MediaKind, MediaLimits, decode_media

    decoded = decode_media(MediaKind.VIDEO, (tmp_path / "a/video/vid_00001.mp4").read_bytes(), "", MediaLimits())
    assert decoded.duration == pytest.approx(2.0, abs=0.2)  # type: ignore[union-attr]

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


def _combination(ex: Example) -> tuple[str, str, str]:
    """(template family, caption, template) of a built example, recovered from its text alone."""
    from modaverse_training.builder import CONVERT, CREATE, DESCRIBE

    (inv,) = ex.meta_response
    if ex.task == "input":
        caption = inv.prompt[0].lower() + inv.prompt[1:].rstrip(".")
        assert ex.instruction in DESCRIBE[ex.media[0].kind]
        return f"describe/{ex.media[0].kind}", caption, ex.instruction
    if ex.task == "output":
        (template,) = [t for t in CREATE[inv.modality] if t.format(c=inv.prompt) == ex.instruction]
        return f"create/{inv.modality}", inv.prompt, template
    assert ex.instruction in CONVERT[inv.modality]
    return f"convert/{inv.modality}", inv.prompt, ex.instruction


def test_test_split_uses_only_combinations_training_never_sees() -> None:
    from modaverse_training.builder import HeldOutCombos

    captions = [f"a {c} {s}" for c in ("red", "blue", "green") for s in ("circle", "square", "star")]
    items = [CaptionedMedia(k, f"{k}{i}", c) for k in ("image", "video") for i, c in enumerate(captions)]
    combos = HeldOutCombos(seed=5)
    train = build_examples(items, 3000, seed=1, combos=combos, side="train")
    test = build_examples(items, 600, seed=2, combos=combos, side="test")
    seen = {_combination(ex) for ex in train}
    held = {_combination(ex) for ex in test}
    assert not seen & held
    # each (family, caption) has exactly one held-out wording, and training uses every other one
    by_caption: dict[tuple[str, str], set[str]] = {}
    for family, caption, template in held:
        by_caption.setdefault((family, caption), set()).add(template)
    assert all(len(t) == 1 for t in by_caption.values())
    for (family, caption), (template,) in by_caption.items():
        trained = {t for f, c, t in seen if (f, c) == (family, caption)}
        assert trained and template not in trained
    # the held-out choice is a pure function of (seed, family, caption): another seed moves some of it
    other = {_combination(ex) for ex in build_examples(items, 600, seed=2, combos=HeldOutCombos(6), side="test")}
    assert other != held
    # without combos the builder is what it always was (the same seed gives the same data)
    assert build_examples(items, 50, seed=1) == build_examples(items, 50, seed=1, combos=None, side="test")


def test_three_way_split_keeps_validation_last() -> None:
    from modaverse_training.recipe import split

    items = [CaptionedMedia("image", f"{i}.png", "a red circle") for i in range(100)]
    train, validation, test = split(items, 0.1, 0.1)
    assert [len(train), len(validation), len(test)] == [80, 10, 10]
    assert validation == items[90:] and test == items[80:90] and train == items[:80]
    assert [len(p) for p in split(items[:3], 0.1, 0.1)] == [1, 1, 1]
    with pytest.raises(ValueError, match="cannot be split"):
        split(items[:2], 0.1, 0.1)


def test_benchmark_file_from_the_test_split(tmp_path: Path) -> None:
    from modaverse_training.benchmark import BENCHMARK_FILE, write_benchmark
    from modaverse_training.builder import DESCRIBE, HeldOutCombos

    world = tmp_path / "world"
    (world / "images").mkdir(parents=True)
    (world / "images/a.png").write_bytes(b"png")
    test = [
        Example(
            "Describe this image.",
            (MediaRef("image", "images/a.png"),),
            (Invocation("text", "A red star."),),
            "input",
            "test-1",
        ),
        Example("Paint a blue circle.", (), (Invocation("image", "a blue circle"),), "output", "test-2"),
        Example("Play a high beep.", (), (Invocation("audio", "a high beep"),), "output", "test-3"),
    ]
    path = write_benchmark(test, world, tmp_path / "eval", HeldOutCombos(0))
    assert path == tmp_path / "eval" / BENCHMARK_FILE
    records = [json.loads(line) for line in path.read_text().splitlines()]
    first, second, third = records[:3]
    assert first == {
        "id": "test-1",
        "category": "image->text",
        "instruction": "Describe this image.",
        "expected": "text",
        "reference": "A red star.",
        "media": [{"kind": "image", "path": "media/images/a.png"}],
    }
    assert (tmp_path / "eval/media/images/a.png").read_bytes() == b"png"
    trained_questions = HeldOutCombos(0).templates("describe/image", "a blue circle", DESCRIBE["image"], "train")
    assert second["round_trip"] == {
        "question": trained_questions[0],  # a wording training paired with the caption: the drawing is tested
        "attributes": {"colour": "blue", "shape": "circle"},
    }
    assert "round_trip" not in third  # only images of a colour and a shape can be checked by describing them
    draws = records[3:]
    assert len(draws) == 6 * 5 and len({r["id"] for r in draws}) == 30
    assert all(r["expected"] == "image" and r["reference"] in r["instruction"] for r in draws)
    for r in draws:  # the question about the drawing is never one of the held-out pairings
        held = HeldOutCombos(0).templates("describe/image", r["reference"], DESCRIBE["image"], "test")
        assert r["round_trip"]["question"] not in held

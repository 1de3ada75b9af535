"""``modaverse eval`` end to end: the command against a real gateway, real tiny encoder and generators, and the
scripted LLM (scripted_llm.py), so each record's meta-response is chosen by its instruction and every number of
the report is known in advance.

No video generator is configured (a video invocation fails with the gateway's INVALID_ARGUMENT), and one
instruction is longer than the gateway accepts (the chat fails before a meta-response). Timings are never
asserted. The servers run on a background loop: the command runs its own event loop (``asyncio.run``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from modaverse.cli import main
from modaverse_runtime import samples
from modaverse_runtime.server import ModaverseServer

from . import gateway_fixtures
from .encoder_fixtures import RunningEncoder, start_encoder
from .generator_fixtures import RunningGenerator, start_generator
from .in_process import BackgroundLoop
from .scripted_llm import ScriptedLLM, start_scripted_llm

MAX_TEXT_CHARS = 2000
RT = "Modality: [TEXT] Prompt: "  # the scripted LLM answers a round-trip question with what follows this


@dataclass
class Gateway:
    target: str
    llm: ScriptedLLM
    servers: list[ModaverseServer]
    running: list[RunningEncoder | RunningGenerator]


@pytest.fixture(scope="module")
def gateway(background: BackgroundLoop, model_dir: Path) -> Iterator[Gateway]:
    async def start() -> Gateway:
        encoder = await start_encoder(model_dir)
        llm_server, llm = await start_scripted_llm()
        image = await start_generator(model_dir, "text-to-image", default_steps=2)
        audio = await start_generator(model_dir, "text-to-audio", default_steps=2)
        server = await gateway_fixtures.start_gateway(
            encoder.target,
            f"127.0.0.1:{llm_server.port}",
            {"image": image.target, "audio": audio.target},  # no video route
            retry_backoff_ms=10,
            max_text_chars=MAX_TEXT_CHARS,
        )
        return Gateway(f"127.0.0.1:{server.port}", llm, [server, llm_server], [image, audio, encoder])

    running = background.run(start(), timeout=600)
    yield running

    async def stop() -> None:
        for server in running.servers:
            await server.stop(1)
        for service in running.running:
            await service.stop()

    background.run(stop())


def records(folder: Path) -> list[dict[str, Any]]:
    (folder / "media").mkdir(parents=True, exist_ok=True)
    (folder / "media" / "circle.png").write_bytes(samples.make_image("circle", "red", size=64))
    return [
        {"id": "t-ok", "category": "chat", "instruction": "Modality: [TEXT] Prompt: Hello there.",
         "expected": "text", "reference": "hello there"},
        {"id": "i-ok", "category": "draw", "instruction": "Modality: [IMAGE] Prompt: a red circle",
         "expected": "image", "reference": "a red circle",
         "round_trip": {"question": RT + "It is a red circle.", "attributes": {"colour": "red", "shape": "circle"}}},
        {"id": "i-f1", "category": "draw", "instruction": "Modality: [IMAGE] Prompt: a big red circle",
         "expected": "image", "reference": "a red circle",
         "round_trip": {"question": RT + "a red square", "attributes": {"colour": "red", "shape": "circle"}}},
        {"id": "i-wrong", "category": "draw", "instruction": "Modality: [TEXT] Prompt: I only talk.",
         "expected": "image", "reference": "a cat"},
        {"id": "a-ok", "category": "sound", "instruction": "Modality: [AUDIO] Prompt: a bell ringing",
         "expected": "audio", "reference": "A bell ringing."},
        {"id": "v-none", "category": "video", "instruction": "Modality: [VIDEO] Prompt: a square sliding",
         "expected": "video"},
        {"id": "x-long", "category": "chat", "instruction": RT + "x" * MAX_TEXT_CHARS, "expected": "text",
         "reference": "anything"},
        {"id": "it-media", "category": "describe", "instruction": "What is this?",
         "media": [{"kind": "image", "path": "media/circle.png"}], "expected": "text"},
        {"id": "i-two", "category": "draw", "instruction": "Modality: [IMAGE] Prompt: a blue square",
         "expected": "image", "reference": "a blue square"},
    ]  # fmt: skip


def write_data(folder: Path) -> Path:
    path = folder / "bench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records(folder)))
    return path


def run_eval(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(["eval", *argv, "--progress", "lines", "--concurrency", "3"])
    captured = capsys.readouterr()
    return int(exit_.value.code or 0), captured.out, captured.err


def asked(llm: ScriptedLLM, since: int) -> list[str]:
    """The last user text of each LLM request from ``since`` on."""
    return [
        "".join(s.text for s in request.messages[-1].segments if s.HasField("text")) for request in llm.requests[since:]
    ]


def lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_eval_measures_routing_prompts_failures_agreement_and_round_trips_and_resumes(
    gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = write_data(tmp_path), tmp_path / "out"
    argv = [str(data), "--target", gateway.target, "--out", str(out), "--seed", "3"]

    # --limit 3: only the first three records (and their two round trips) reach the LLM.
    before = len(gateway.llm.requests)
    code, _, err = run_eval(capsys, *argv, "--limit", "3")
    assert code == 0, err
    first = asked(gateway.llm, before)
    assert sorted(first) == sorted(
        [
            "Modality: [TEXT] Prompt: Hello there.",
            "Modality: [IMAGE] Prompt: a red circle",
            "Modality: [IMAGE] Prompt: a big red circle",
            RT + "It is a red circle.",
            RT + "a red square",
        ]
    )
    assert {r["id"] for r in lines(out)} == {"t-ok", "i-ok", "i-f1"}
    partial = json.loads((out / "report.json").read_text())
    assert partial["data"]["evaluated"] == 3 and partial["data"]["not_run"] == 6

    # The whole file: only the rest is sent (the long chat is refused by the gateway before the LLM).
    before = len(gateway.llm.requests)
    code, stdout, err = run_eval(capsys, *argv)
    assert code == 0, err
    assert "9 record(s) selected, 3 already done, 6 to run" in err
    second = asked(gateway.llm, before)
    assert len(second) == 5 and not set(second) & set(first)
    assert "Modality: [VIDEO] Prompt: a square sliding" in second and "What is this?" in second
    assert "routing accuracy 77.8% (7/9)" in stdout

    report = json.loads((out / "report.json").read_text())
    routing = report["routing"]
    assert routing["accuracy"] == {"value": 7 / 9, "numerator": 7, "denominator": 9}
    counts = routing["confusion"]["counts"]
    assert counts["image"] == {"text": 1, "image": 3, "audio": 0, "video": 0, "error": 0}
    assert counts["text"] == {"text": 2, "image": 0, "audio": 0, "video": 0, "error": 1}
    assert counts["audio"]["audio"] == 1 and counts["video"]["video"] == 1
    assert routing["by_category"]["draw"] == {"value": 0.75, "numerator": 3, "denominator": 4}

    prompts = report["prompts"]
    assert prompts["routed_correctly"]["exact_match"] == {"value": 0.8, "numerator": 4, "denominator": 5}
    f1_big = 2 * 0.75 / 1.75  # "a big red circle" against "a red circle"
    assert prompts["routed_correctly"]["token_f1"]["mean"] == pytest.approx((4 + f1_big) / 5)
    assert prompts["all_with_reference"]["exact_match"] == {"value": 4 / 7, "numerator": 4, "denominator": 7}

    failures = report["failures"]
    assert failures["chat"]["count"] == 1 and list(failures["chat"]["by_code"]) == ["INVALID_ARGUMENT"]
    assert failures["invocations"]["denominator"] == 5
    video_error = failures["invocations"]["by_code"]["INVALID_ARGUMENT"]
    assert video_error["count"] == 1 and "no video generator" in video_error["example"]
    assert failures["round_trip_chat"] == {"count": 0, "denominator": 2, "by_code": {}}
    assert failures["embed"]["count"] == 0

    latency = report["latency"]
    assert latency["total"]["count"] == 9 and latency["meta_response"]["count"] == 8
    assert (
        latency["generators"]["image"]["seen"]["count"] == 3
        and latency["generators"]["audio"]["reported"]["count"] == 1
    )

    trip = report["round_trip"]
    assert (trip["records"], trip["answered"], trip["failed"]) == (2, 2, 0)
    assert trip["attributes"]["colour"]["numerator"] == 2 and trip["attributes"]["shape"]["numerator"] == 1
    assert trip["all_attributes"] == {"value": 0.5, "numerator": 1, "denominator": 2}

    agreed = report["agreement"]
    assert agreed["skipped"] is None and agreed["encoder_id"]
    assert agreed["by_modality"]["image"]["items"] == 3 and agreed["by_modality"]["image"]["baseline"] == "defined"
    assert agreed["by_modality"]["image"]["matched_beats_shuffled"]["denominator"] == 3
    assert agreed["by_modality"]["audio"]["baseline"] == "undefined: fewer than 2 items"
    assert agreed["overall"]["items"] == 3

    # The media a person can look at, and the plots.
    with Image.open(out / "media" / "i-ok-0.png") as image:
        assert image.format == "PNG"
    assert (out / "media" / "a-ok-0.wav").stat().st_size > 0
    for name in ("confusion.png", "latency.png", "scores.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG"
    md = (out / "report.md").read_text()
    assert "Accuracy: **77.8% (7/9)** of all records" in md
    assert "| image | 1 | 3 | 0 | 0 | 0 |" in md
    assert "| chat | INVALID_ARGUMENT | 1 of 9 |" in md
    assert "[i-ok-0.png](media/i-ok-0.png)" in md

    # --retry-failed runs the failed chat again (refused by the gateway again: no LLM call); a plain rerun
    # sends nothing; a line cut short by a killed run is done again.
    before, stored = len(gateway.llm.requests), len(lines(out))
    code, _, err = run_eval(capsys, *argv, "--retry-failed")
    assert code == 0 and "1 failed before and run again" in err
    assert len(gateway.llm.requests) == before and len(lines(out)) == stored + 1
    code, _, err = run_eval(capsys, *argv)
    assert code == 0 and "0 to run" in err and len(lines(out)) == stored + 1
    text = (out / "results.jsonl").read_text()
    last = lines(out)[-2]  # the last line is x-long's retry; cut the one before it short
    kept = text.rsplit("\n", 3)[0] + "\n"
    (out / "results.jsonl").write_text(kept + json.dumps(last)[:30])
    code, _, err = run_eval(capsys, *argv)
    assert code == 0 and "cut short" in err
    assert {r["id"] for r in lines(out)} >= {last["id"], "x-long"}
    assert json.loads((out / "report.json").read_text())["routing"]["accuracy"]["numerator"] == 7

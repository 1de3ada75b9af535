"""The CI slice of `make eval-tiny`: a shortened tiny recipe, its test benchmark through the served stack.

The tiny recipe runs shortened (a 600-image world, 300 steps; about a minute and a half on 2 cores) with its
real splits, so the benchmark file is the one `make tiny-model` writes: test media, wordings held out from
training and validation, and the round-trip draws. The exported model is served by the real encoder, LLM,
generators and gateway, and `modaverse eval` runs the first records of the file. The assertions read the
report: routing on the slice must reach 90 % (the shortened model routes every validation example; describing
shapes needs the full recipe, so prompt quality is only checked to be measured). The full run is
`make eval-tiny`; its figures are in docs/eval.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from modaverse.cli import main
from modaverse.evaluation import load_records
from modaverse_runtime.server import ModaverseServer
from modaverse_training.benchmark import BENCHMARK_FILE
from modaverse_training.image_generator import GeneratorTrainConfig
from modaverse_training.recipe import TINY_CONFIG, TinyRecipe, run_tiny

from . import gateway_fixtures
from .encoder_fixtures import RunningEncoder, start_encoder
from .generator_fixtures import RunningGenerator, start_generator
from .in_process import BackgroundLoop
from .llm_fixtures import RunningLLM, start_llm

SLICE = 40
SHORT = TinyRecipe(
    images=600,
    audio=60,
    video=20,
    train_examples=4000,
    eval_examples=40,
    test_examples=60,
    config=replace(TINY_CONFIG, steps=300, warmup=30, eval_every=0, checkpoint_every=0, progress=False),
    # a few steps: the generator's training runs in its process beside the LLM's and is saved where it is served
    image_generator=GeneratorTrainConfig(images=60, vae_steps=3, steps=3, threads=1),
)


@dataclass
class Served:
    model_dir: Path
    summary: dict[str, Any]
    target: str
    stop: list[ModaverseServer | RunningEncoder | RunningLLM | RunningGenerator]


@pytest.fixture(scope="module")
def served(background: BackgroundLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("eval-tiny")
    model_dir = root / "models"
    summary = run_tiny(model_dir, root / "work", SHORT)

    async def start() -> Served:
        encoder = await start_encoder(model_dir)
        llm = await start_llm(model_dir)
        kinds = {"image": "text-to-image", "video": "text-to-video", "audio": "text-to-audio"}
        generators = {m: await start_generator(model_dir, kind, default_steps=2) for m, kind in kinds.items()}
        gateway = await gateway_fixtures.start_gateway(
            encoder.target, llm.target, {m: g.target for m, g in generators.items()}
        )
        return Served(model_dir, summary, f"127.0.0.1:{gateway.port}", [gateway, llm, encoder, *generators.values()])

    running = background.run(start(), timeout=600)
    yield running

    async def stop() -> None:
        for service in running.stop:
            await service.stop(1) if isinstance(service, ModaverseServer) else await service.stop()

    background.run(stop())


def test_the_recipe_writes_its_test_split_as_a_benchmark(served: Served) -> None:
    path = served.model_dir / "tiny" / "eval" / BENCHMARK_FILE
    records = load_records(path)  # every media file it names exists beside it
    assert len(records) == SHORT.test_examples + 30  # the test split, then one draw per colour x shape
    assert {r.expected for r in records} == {"text", "image", "audio", "video"}
    assert sum(r.round_trip is not None for r in records) >= 30
    test = served.summary["test"]
    assert test["count"] == SHORT.test_examples and served.summary["recipe_version"] >= 3
    trained = served.summary["image_generator"]
    assert trained["images"] == 60  # the child's summary came back, and its pipelines are what is served:
    for kind in ("text-to-image", "image-to-image"):
        index = json.loads((served.model_dir / "tiny" / "generators" / kind / "model_index.json").read_text())
        assert index["vae"] == ["diffusers", "AutoencoderKL"]


def test_the_slice_routes_at_least_90_percent(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = served.model_dir / "tiny" / "eval" / BENCHMARK_FILE
    out = tmp_path / "report"
    argv = ["eval", str(data), "--target", served.target, "--out", str(out), "--limit", str(SLICE)]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--progress", "lines", "--concurrency", "4"])
    assert exit_.value.code in (0, None), capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    routing = report["routing"]["accuracy"]
    assert routing["denominator"] == SLICE
    assert routing["value"] >= 0.9, report["routing"]["confusion"]
    assert report["failures"]["chat"]["count"] == 0
    # prompts and latencies are measured for the slice, with their denominators
    assert report["prompts"]["all_with_reference"]["token_f1"]["count"] == SLICE
    assert report["latency"]["meta_response"]["count"] == SLICE
    text = (out / "report.md").read_text()
    assert f"{routing['numerator']}/{SLICE}" in text.replace(" ", "")
    assert {p.name for p in out.glob("*.png")} == {"confusion.png", "latency.png", "scores.png"}

"""The image generator trained in a child process: its lines become the parent's notes, its result or error
comes back (a spawned interpreter each, so a few seconds per test)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from modaverse_training.generator_job import LABEL, GeneratorTrainingError, start_generator_job
from modaverse_training.image_generator import GeneratorTrainConfig
from modaverse_training.progress import Progress

TINY = GeneratorTrainConfig(images=8, vae_steps=1, vae_batch_size=4, steps=1, batch_size=4, threads=1)


def test_progress_lines_and_the_summary_come_back(tmp_path: Path) -> None:
    stream = io.StringIO()
    job = start_generator_job({"text-to-image": tmp_path / "t2i"}, TINY, 0, Progress("lines", stream))
    summary = job.wait()
    assert summary["images"] == 8
    assert (tmp_path / "t2i" / "model_index.json").is_file()
    notes = [line for line in stream.getvalue().splitlines() if line.startswith(f"{LABEL}: ")]
    assert any("done" in line for line in notes), stream.getvalue()


def test_a_failing_child_raises_with_its_traceback(tmp_path: Path) -> None:
    job = start_generator_job({"no-such-kind": tmp_path}, TINY, 0, Progress.off())
    with pytest.raises(GeneratorTrainingError, match="no generator kind no-such-kind"):
        job.wait()
    assert not job.process.is_alive()

"""``modaverse-train``: train (with resume and export) and params, through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modaverse_training.cli import main
from modaverse_training.schema import write_jsonl

from .conftest import Tiny


def test_train_command_trains_resumes_and_exports(
    tiny: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_jsonl(tiny.world / "cli-train.jsonl", tiny.train[:40])
    write_jsonl(tiny.world / "cli-eval.jsonl", tiny.eval[:4])
    args = [
        "train",
        "--train", str(tiny.world / "cli-train.jsonl"),
        "--eval", str(tiny.world / "cli-eval.jsonl"),
        "--run-dir", str(tmp_path / "run"),
        "--cache-dir", str(tmp_path / "features"),
        "--model-dir", str(tiny.model_dir),
        "--base", tiny.base,
        "--export", str(tmp_path / "out"),
        "--steps", "2", "--batch-size", "4", "--threads", "1", "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["trainable_parameters"] == 199_936 and first["eval"]["count"] == 4
    assert (tmp_path / "out/llm/adapters/default/adapter_model.safetensors").is_file()
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["steps"] == 2
    # a second call resumes from the last checkpoint: nothing left to train
    assert main([*args[:-7], "--steps", "2", "--batch-size", "4", "--threads", "1", "--no-progress"]) == 0
    assert json.loads((tmp_path / "run/summary.json").read_text())["final_loss"] == summary["final_loss"]


def test_params_command_reports_the_release_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["params"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["trainable"] == out["hand_count"] == 37_801_984
    assert out["lora"] == 33_554_432 and out["adaptor"] == 4_198_400 and out["added_token_rows"] == 49_152

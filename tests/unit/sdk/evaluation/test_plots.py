"""The figures are written as PNGs; without matplotlib the command says what to install."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

from modaverse.cli import main
from modaverse.evaluation.plots import PlotsUnavailable, write_plots
from modaverse.evaluation.report import analyse
from modaverse.evaluation.store import ResultStore

from .hand_made import results, write_records, write_results


@pytest.mark.parametrize("agreement", [True, False])
def test_the_three_plots_are_pngs(tmp_path: Path, agreement: bool) -> None:
    records = write_records(tmp_path)
    write_results(tmp_path / "out", results())
    analysis = analyse(records, ResultStore(tmp_path / "out").load().results, agreement_enabled=agreement)
    paths = write_plots(analysis, tmp_path / "out")
    assert [p.name for p in paths] == ["confusion.png", "latency.png", "scores.png"]
    for path in paths:
        assert path.stat().st_size > 0
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 100


def test_plots_of_an_empty_run(tmp_path: Path) -> None:
    analysis = analyse(write_records(tmp_path), {})
    for path in write_plots(analysis, tmp_path / "out"):
        with Image.open(path) as image:
            assert image.format == "PNG"


def test_without_matplotlib_it_says_what_to_install_before_any_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_records(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(PlotsUnavailable):
        write_plots(analyse(write_records(tmp_path), {}), tmp_path / "out")
    with pytest.raises(SystemExit) as exit_:
        main(["eval", str(tmp_path / "bench.jsonl"), "--target", "127.0.0.1:1", "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: the evaluation's plots need matplotlib: pip install 'modaverse[eval]'\n"
    assert not (tmp_path / "out").exists()

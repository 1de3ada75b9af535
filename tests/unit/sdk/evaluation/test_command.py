"""``modaverse eval``'s checks before any call, and recomputing a finished run's report without a gateway."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from modaverse.cli import main

from .hand_made import results, write_records, write_results


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(["eval", *argv])
    captured = capsys.readouterr()
    return int(exit_.value.code or 0), captured.out, captured.err


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_missing_data_file_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "out"))
    assert code == 2 and err == f"error: {tmp_path / 'nope.jsonl'}: no such file\n"


def test_a_schema_error_names_the_line_before_any_call(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "bench.jsonl"
    data.write_text('{"id": "a", "instruction": "x", "expected": "text"}\n{"id": "b", "instruction": "x"}\n')
    # The target would fail too: the data is checked first.
    code, _, err = run(capsys, str(data), "--target", f"127.0.0.1:{unused_port()}", "--out", str(tmp_path / "o"))
    assert code == 2 and err == f"error: {data}:2: missing required key 'expected'\n"
    assert not (tmp_path / "o").exists()


def test_an_unreachable_gateway_is_a_clear_error_within_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_records(tmp_path)
    target = f"127.0.0.1:{unused_port()}"
    started = time.monotonic()
    code, _, err = run(capsys, str(tmp_path / "bench.jsonl"), "--target", target, "--out", str(tmp_path / "out"))
    assert code == 2
    assert err.splitlines()[-1].startswith(f"error: gateway {target} is unreachable (UNAVAILABLE")
    assert time.monotonic() - started < 15
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_a_token_without_tls_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_records(tmp_path)
    code, _, err = run(capsys, str(tmp_path / "bench.jsonl"), "--out", str(tmp_path / "out"), "--token", "t")
    assert code == 2 and "sent over TLS only" in err


def test_a_finished_run_recomputes_its_report_without_calling_the_gateway(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_records(tmp_path)
    write_results(tmp_path / "out", results())
    target = f"127.0.0.1:{unused_port()}"  # nothing listens: no call is made
    argv = [str(tmp_path / "bench.jsonl"), "--target", target, "--out", str(tmp_path / "out"), "--no-agreement"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert "5 record(s) selected, 5 already done, 0 to run" in err
    assert "routing accuracy 60.0% (3/5)" in out and "agreement: skipped" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["run"]["target"] == target and report["run"]["finished_this_run"] == 0
    assert report["agreement"]["skipped"]
    assert {p.name for p in (tmp_path / "out").glob("*.png")} == {"confusion.png", "latency.png", "scores.png"}
    assert "## Cross-modal agreement\n\nSkipped (--no-agreement" in (tmp_path / "out" / "report.md").read_text()


def test_ctrl_c_keeps_what_was_written_and_says_how_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from modaverse.evaluation import command

    write_records(tmp_path)
    out = tmp_path / "out"

    async def interrupted(*args: object) -> int:
        write_results(out, results()[:2])  # two records finished, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "_run", interrupted)
    code, _, err = run(capsys, str(tmp_path / "bench.jsonl"), "--out", str(out))
    assert code == 130
    assert err.splitlines()[-1] == (
        f"interrupted: 2 result(s) kept in {out / 'results.jsonl'}; run the same command again to resume "
        "(finished records are skipped)"
    )
    assert not (out / "report.json").exists()

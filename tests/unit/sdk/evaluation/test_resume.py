"""Resuming: the store keeps finished records, drops a line cut short, and the plan runs only what is left."""

from __future__ import annotations

import json
from pathlib import Path

from modaverse.evaluation.runner import EvalOptions, plan
from modaverse.evaluation.store import ResultStore, decode_vector, encode_vector

from .hand_made import RECORDS, results, write_records, write_results


def test_vectors_round_trip_through_base64() -> None:
    import numpy as np

    vector = np.array([0.25, -1.5, 3.0], dtype=np.float32)
    assert decode_vector(encode_vector(vector)).tolist() == [0.25, -1.5, 3.0]


def test_a_truncated_last_line_is_dropped_and_cut_off_the_file(tmp_path: Path) -> None:
    lines = results()
    path = write_results(tmp_path, lines[:2])
    whole = path.read_bytes()
    path.write_bytes(whole + json.dumps(lines[2]).encode()[:40])  # killed mid-write: no newline
    store = ResultStore(tmp_path)
    loaded = store.load()
    assert loaded.truncated and loaded.dropped == 1
    assert sorted(loaded.results) == ["i1", "t1"]
    assert path.read_bytes() == whole  # the next append starts on a line of its own
    store.append(lines[2])
    again = store.load()
    assert sorted(again.results) == ["i1", "i2", "t1"] and not again.truncated and again.dropped == 0


def test_a_broken_line_in_the_middle_is_ignored_and_the_last_line_of_an_id_wins(tmp_path: Path) -> None:
    lines = results()
    newer = dict(lines[0], answer="hello again")
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(lines[0]) + "\n{not json\n" + json.dumps(newer) + "\n" + '{"no": "id"}\n')
    loaded = ResultStore(tmp_path).load()
    assert loaded.dropped == 2 and not loaded.truncated
    assert loaded.results["t1"]["answer"] == "hello again"


def test_the_plan_skips_finished_records_and_reruns_changed_and_truncated_ones(tmp_path: Path) -> None:
    lines = results()  # t1, i1, i2, a1 (chat failed), v1
    path = write_results(tmp_path / "out", lines[:4])
    path.write_bytes(path.read_bytes() + json.dumps(lines[4]).encode()[:25])  # v1 cut short
    changed = [dict(r) for r in RECORDS]
    changed[0] = {**changed[0], "reference": "Hello."}  # t1 changed since its result
    records = write_records(tmp_path, changed)
    loaded = ResultStore(tmp_path / "out").load()
    todo = plan(records, loaded, EvalOptions())
    assert [r.id for r in todo.pending] == ["t1", "v1"]
    assert todo.changed == ["t1"] and todo.done == 3
    # A failed chat counts as finished unless --retry-failed.
    retry = plan(records, loaded, EvalOptions(retry_failed=True))
    assert [r.id for r in retry.pending] == ["t1", "a1", "v1"] and retry.retried == ["a1"]
    # --limit: only the file's first N records.
    limited = plan(records, loaded, EvalOptions(limit=2))
    assert [r.id for r in limited.selected] == ["t1", "i1"] and [r.id for r in limited.pending] == ["t1"]

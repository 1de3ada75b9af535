"""The report from a hand-made results.jsonl: every number, the Markdown, what is left out and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modaverse.evaluation.report import analyse, render_markdown, write_report
from modaverse.evaluation.store import ResultStore

from .hand_made import RECORDS, result, results, vector, write_records, write_results


def report_for(tmp_path: Path, lines: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    records = write_records(tmp_path)
    write_results(tmp_path / "out", lines)
    return analyse(records, ResultStore(tmp_path / "out").load().results, **kwargs).report


def test_routing_accuracy_per_category_and_the_confusion_matrix(tmp_path: Path) -> None:
    routing = report_for(tmp_path, results())["routing"]
    assert routing["accuracy"] == {"value": 0.6, "numerator": 3, "denominator": 5}
    assert routing["accuracy_of_answered"] == {"value": 0.75, "numerator": 3, "denominator": 4}
    assert {c: (r["numerator"], r["denominator"]) for c, r in routing["by_category"].items()} == {
        "text->audio": (0, 1),
        "text->image": (1, 2),
        "text->text": (1, 1),
        "text->video": (1, 1),
    }
    confusion = routing["confusion"]
    assert confusion["routed"] == ["text", "image", "audio", "video", "error"]
    assert confusion["counts"]["image"] == {"text": 1, "image": 1, "audio": 0, "video": 0, "error": 0}
    assert confusion["counts"]["audio"]["error"] == 1
    assert confusion["counts"]["video"]["video"] == 1 and confusion["counts"]["text"]["text"] == 1


def test_prompt_scores_over_correct_routes_and_over_every_reference(tmp_path: Path) -> None:
    prompts = report_for(tmp_path, results())["prompts"]
    f1_circle = 2 * 0.75 / 1.75  # "a big red circle" vs "a red circle"
    correct = prompts["routed_correctly"]
    assert correct["exact_match"] == {"value": 0.5, "numerator": 1, "denominator": 2}
    assert correct["token_f1"] == {"mean": pytest.approx((1 + f1_circle) / 2), "count": 2}
    everything = prompts["all_with_reference"]  # i2 (routed to text) and a1 (failed) score 0; v1 has no reference
    assert everything["exact_match"] == {"value": 0.25, "numerator": 1, "denominator": 4}
    assert everything["token_f1"]["mean"] == pytest.approx((1 + f1_circle) / 4)
    assert prompts["records_with_reference"] == 4


def test_latency_counts_per_route(tmp_path: Path) -> None:
    latency = report_for(tmp_path, results())["latency"]
    assert latency["first_token"]["count"] == 4  # the failed chat had no first token
    assert latency["total"]["count"] == 5
    assert latency["round_trip"]["count"] == 1
    assert latency["generators"]["image"]["seen"]["count"] == 1  # v1's image invocation failed
    assert latency["generators"]["video"]["reported"] == {"count": 1, "p50": 0.4, "p95": 0.4, "p99": 0.4, "mean": 0.4}
    assert "audio" not in latency["generators"]


def test_failures_by_status_with_an_example_each(tmp_path: Path) -> None:
    failures = report_for(tmp_path, results())["failures"]
    assert failures["records_with_a_failed_call"]["numerator"] == 2
    assert failures["chat"] == {
        "count": 1,
        "denominator": 5,
        "by_code": {"INVALID_ARGUMENT": {"count": 1, "example": "text too long"}},
    }
    assert failures["invocations"]["by_code"] == {"NOT_FOUND": {"count": 1, "example": "no route for image"}}
    assert failures["invocations"]["denominator"] == 3
    assert failures["embed"]["by_code"]["UNIMPLEMENTED"]["count"] == 1 and failures["embed"]["denominator"] == 2
    assert failures["round_trip_chat"] == {"count": 0, "denominator": 1, "by_code": {}}


def test_round_trip_per_attribute_and_all_attributes(tmp_path: Path) -> None:
    trip = report_for(tmp_path, results())["round_trip"]
    assert (trip["records"], trip["answered"], trip["no_generated_item"], trip["failed"]) == (2, 1, 1, 0)
    assert trip["attributes"]["colour"] == {"value": 1.0, "numerator": 1, "denominator": 1}
    assert trip["attributes"]["shape"]["value"] == 0.0
    assert trip["all_attributes"] == {"value": 0.0, "numerator": 0, "denominator": 1}
    assert trip["all_attributes_of_all_records"]["denominator"] == 2


def test_agreement_with_one_item_says_the_baseline_is_undefined(tmp_path: Path) -> None:
    agreed = report_for(tmp_path, results())["agreement"]
    assert agreed["skipped"] is None and agreed["encoder_id"] == "enc-1"
    image = agreed["by_modality"]["image"]
    assert image["items"] == 1 and image["matched_mean"] == pytest.approx(1.0)
    assert image["shuffled_mean"] is None and image["baseline"] == "undefined: fewer than 2 items"
    assert agreed["overall"]["matched_mean"] is None
    assert agreed["items_without_scores"] == 1  # v1's video: its Embed call failed
    assert report_for(tmp_path, results(), agreement_enabled=False)["agreement"] == {
        "skipped": "--no-agreement: no Embed calls were made"
    }


def _scored(raw: dict[str, Any], item: list[float], text: list[float], encoder: str = "enc") -> dict[str, Any]:
    items = [
        {"index": 0, "modality": "image", "prompt": "p", "matched": 0.0, "item_vector": vector(*item),
         "text_vector": vector(*text)}
    ]  # fmt: skip
    return result(
        raw, "image", prompts=(("image", "p"),), agreement={"encoder_id": encoder, "items": items, "error": None}
    )


def test_agreement_matched_vs_shuffled_from_stored_vectors(tmp_path: Path) -> None:
    records = [{"id": f"r{i}", "instruction": "x", "expected": "image"} for i in range(3)] + [
        {"id": "other", "instruction": "x", "expected": "image"}
    ]
    loaded = write_records(tmp_path, records)
    basis = np.eye(3).tolist()
    lines = [_scored(records[i], basis[i], basis[i]) for i in range(3)]
    lines.append(_scored(records[3], [1, 0, 0], [1, 0, 0], encoder="enc-other"))
    write_results(tmp_path / "out", lines)
    stored = ResultStore(tmp_path / "out").load().results
    agreed = analyse(loaded, stored, seed=7).report["agreement"]
    image = agreed["by_modality"]["image"]
    assert image["items"] == 3 and image["baseline"] == "defined"
    assert (image["matched_mean"], image["shuffled_mean"], image["difference"]) == pytest.approx((1.0, 0.0, 1.0))
    assert image["matched_beats_shuffled"] == {"value": 1.0, "numerator": 3, "denominator": 3}
    assert agreed["items_from_another_encoder"] == 1
    assert agreed["overall"]["items"] == 3


def test_results_for_ids_no_longer_in_the_data_or_for_a_changed_record_are_left_out(tmp_path: Path) -> None:
    lines = results()
    lines.append(result({"id": "gone", "instruction": "x", "expected": "text"}, "text"))
    changed = [dict(r) for r in RECORDS]
    changed[1] = {**changed[1], "instruction": "Draw a red disc."}
    records = write_records(tmp_path, changed)
    write_results(tmp_path / "out", lines)
    report = analyse(records, ResultStore(tmp_path / "out").load().results).report
    assert report["data"]["ignored_not_in_data"] == {"count": 1, "ids": ["gone"]}
    assert report["data"]["changed_not_rerun"] == {"count": 1, "ids": ["i1"]}
    assert report["data"]["evaluated"] == 4
    assert report["routing"]["accuracy"]["denominator"] == 4
    assert "1 stored result(s) are for ids no longer in the benchmark file and are ignored: `gone`" in (
        render_markdown(report)
    )


def test_markdown_and_json_files(tmp_path: Path) -> None:
    report = report_for(tmp_path, results(), run={"data": "bench.jsonl", "target": "gw:1", "seed": 0})
    json_path, md_path = write_report(tmp_path / "out", report)
    assert json.loads(json_path.read_text())["routing"]["accuracy"]["numerator"] == 3
    md = md_path.read_text()
    assert "**How to read this.**" in md
    assert "Accuracy: **60.0% (3/5)** of all records" in md
    assert "| text->audio | 0.0% (0/1) |" in md
    assert "| image | 1 | 1 | 0 | 0 | 0 |" in md  # the confusion matrix's image row
    assert "| chat | INVALID_ARGUMENT | 1 of 5 | text too long |" in md
    assert "| invocation | NOT_FOUND | 1 of 3 | no route for image |" in md
    assert "| overall | 0 | n/a | n/a | n/a | n/a (0/0) |" in md  # no defined baseline: n/a, no division
    assert "[i1-0.png](media/i1-0.png)" in md
    assert "colour:✓ shape:✗" in md


def test_an_empty_report_has_no_division_by_zero(tmp_path: Path) -> None:
    report = report_for(tmp_path, [])
    assert report["routing"]["accuracy"] == {"value": None, "numerator": 0, "denominator": 0}
    assert report["prompts"]["routed_correctly"]["token_f1"] == {"mean": None, "count": 0}
    assert report["data"]["not_run"] == 5
    md = render_markdown(report)
    assert "n/a (0/0)" in md and "0 of 5 records evaluated; 5 not run yet" in md

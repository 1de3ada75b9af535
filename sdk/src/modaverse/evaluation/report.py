"""The report: every number from ``results.jsonl`` and the benchmark's records, as ``report.json`` and
``report.md`` (the same numbers in tables, with how to read them).

Only results whose id is in the benchmark file, for the same version of the record (its fingerprint), count;
others are listed as ignored. Each rate carries its denominator; a rate over nothing is ``None`` / "n/a".
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import Agreement, agreement, confusion_matrix, exact_match, latency_summary, mean_of, ratio, token_f1
from .schema import EXPECTED, MEDIA_KINDS, EvalRecord
from .store import decode_vector

REPORT_VERSION = 1
ROUTED_LABELS = (*EXPECTED, "error")
NO_CATEGORY = "(none)"

DEFINITIONS = {
    "routed": "the modality of the first invocation in the meta-response, 'text' when it has none, 'error' when "
    "the chat failed before a meta-response",
    "prediction": "the first invocation's prompt for an expected image/audio/video (empty when there is none), "
    "the text answer for an expected text",
    "exact_match": "prediction == reference after case-folding, collapsing whitespace and stripping trailing periods",
    "token_f1": "SQuAD-style F1 of the words ([a-z0-9]+) the prediction and the reference share",
    "first_token": "seconds from sending the chat to its first TextDelta event",
    "meta_response": "seconds from sending the chat to its MetaResponse event",
    "total": "seconds from sending the chat to the end of its stream",
    "generator_seen": "per invocation, seconds from its InvocationStarted to its InvocationDone as the client saw "
    "them (includes moving the media through the gateway)",
    "generator_reported": "per invocation, InvocationDone.elapsed_seconds (the time the gateway reports)",
    "agreement": "cosine similarity in the encoder's (ImageBind) space between a generated item and its prompt "
    "text, next to the same item against another record's prompt of the same modality (a seeded derangement)",
}


@dataclass
class Analysis:
    """The report (``report``, JSON-ready) and the per-item values the plots draw."""

    report: dict[str, Any]
    f1_routed_correctly: list[float] = field(default_factory=list)
    f1_all: list[float] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)  # plot label -> seconds
    agreement: dict[str, Agreement] = field(default_factory=dict)  # modality -> scores


def prediction(record: EvalRecord, result: dict[str, Any]) -> str:
    if record.expected == "text":
        return str(result.get("answer") or "")
    invocations = result.get("invocations") or []
    return str(invocations[0]["prompt"]) if invocations else ""


def select(records: Sequence[EvalRecord], stored: dict[str, dict[str, Any]]) -> tuple[list[Any], dict[str, Any]]:
    """(record, result) pairs in the file's order, and what was left out and why."""
    ids = {r.id for r in records}
    pairs, changed, missing = [], [], 0
    for record in records:
        result = stored.get(record.id)
        if result is None:
            missing += 1
        elif result.get("fingerprint") != record.fingerprint:
            changed.append(record.id)
        else:
            pairs.append((record, result))
    stale = sorted(i for i in stored if i not in ids)
    info = {
        "records": len(records),
        "evaluated": len(pairs),
        "not_run": missing,
        "changed_not_rerun": {"count": len(changed), "ids": changed[:20]},
        "ignored_not_in_data": {"count": len(stale), "ids": stale[:20]},
    }
    return pairs, info


def _by_code(errors: Sequence[dict[str, str]], denominator: int) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for error in errors:
        counts[error["code"]] += 1
        examples.setdefault(error["code"], error.get("message", ""))
    codes = {code: {"count": n, "example": examples[code]} for code, n in counts.most_common()}
    return {"count": len(errors), "denominator": denominator, "by_code": codes}


def _routing(pairs: Sequence[Any]) -> dict[str, Any]:
    routed = [(r.expected, res.get("routed", "error")) for r, res in pairs]
    labels = list(ROUTED_LABELS) + sorted({x for _, x in routed} - set(ROUTED_LABELS))
    answered = [(e, x) for e, x in routed if x != "error"]
    categories: dict[str, list[bool]] = {}
    expected: dict[str, list[bool]] = {m: [] for m in EXPECTED}
    for (record, _), (e, x) in zip(pairs, routed, strict=True):
        categories.setdefault(record.category or NO_CATEGORY, []).append(e == x)
        expected[e].append(e == x)
    return {
        "accuracy": ratio(sum(e == x for e, x in routed), len(routed)),
        "accuracy_of_answered": ratio(sum(e == x for e, x in answered), len(answered)),
        "by_category": {c: ratio(sum(v), len(v)) for c, v in sorted(categories.items())},
        "by_expected": {m: ratio(sum(v), len(v)) for m, v in expected.items()},
        "confusion": {
            "expected": list(EXPECTED),
            "routed": labels,
            "counts": confusion_matrix(routed, EXPECTED, labels),
        },
    }


def _prompt_scores(items: Sequence[tuple[str, str]]) -> dict[str, Any]:
    f1 = [token_f1(p, ref) for p, ref in items]
    return {"exact_match": ratio(sum(exact_match(p, ref) for p, ref in items), len(items)), "token_f1": mean_of(f1)}


def _prompts(pairs: Sequence[Any], analysis: Analysis) -> dict[str, Any]:
    everything, correct = [], []
    by_category: dict[str, list[tuple[str, str]]] = {}
    for record, result in pairs:
        if record.reference is None:
            continue
        item = (prediction(record, result), record.reference)
        everything.append(item)
        if result.get("routed") == record.expected:
            correct.append(item)
            by_category.setdefault(record.category or NO_CATEGORY, []).append(item)
    analysis.f1_all = [token_f1(p, r) for p, r in everything]
    analysis.f1_routed_correctly = [token_f1(p, r) for p, r in correct]
    return {
        "routed_correctly": _prompt_scores(correct),
        "all_with_reference": _prompt_scores(everything),
        "by_category_routed_correctly": {c: _prompt_scores(v) for c, v in sorted(by_category.items())},
        "records_with_reference": len(everything),
    }


def _latency(pairs: Sequence[Any], analysis: Analysis) -> dict[str, Any]:
    series: dict[str, list[float]] = {"first_token": [], "meta_response": [], "total": [], "round_trip": []}
    seen: dict[str, list[float]] = {}
    reported: dict[str, list[float]] = {}
    for _, result in pairs:
        timings = result.get("timings") or {}
        for key in ("first_token", "meta_response", "total"):
            value = timings.get(f"{key}_s")
            if value is not None:
                series[key].append(float(value))
        for inv in result.get("invocations") or []:
            if inv.get("seen_s") is not None:
                seen.setdefault(inv["modality"], []).append(float(inv["seen_s"]))
            if inv.get("reported_s") is not None and inv.get("error") is None:
                reported.setdefault(inv["modality"], []).append(float(inv["reported_s"]))
        trip = result.get("round_trip") or {}
        if trip.get("total_s") is not None and trip.get("error") is None:
            series["round_trip"].append(float(trip["total_s"]))
    modalities = [m for m in MEDIA_KINDS if m in seen or m in reported]
    analysis.latencies = {
        "first token": series["first_token"],
        "meta-response": series["meta_response"],
        "total chat": series["total"],
        **{f"{m} generator (seen)": seen.get(m, []) for m in modalities},
    }
    return {
        **{key: latency_summary(values) for key, values in series.items()},
        "generators": {
            m: {"seen": latency_summary(seen.get(m, [])), "reported": latency_summary(reported.get(m, []))}
            for m in modalities
        },
    }


def _failures(pairs: Sequence[Any]) -> dict[str, Any]:
    chat, invocation, trips, embeds = [], [], [], []
    n_invocations = n_trips = n_embeds = 0
    for _, result in pairs:
        if result.get("chat_error"):
            chat.append(result["chat_error"])
        for inv in result.get("invocations") or []:
            n_invocations += 1
            if inv.get("error"):
                invocation.append(inv["error"])
        trip = result.get("round_trip") or {}
        if trip and not trip.get("skipped"):
            n_trips += 1
            if trip.get("error"):
                trips.append(trip["error"])
        agreed = result.get("agreement")
        if agreed and (agreed.get("items") or agreed.get("error")):
            n_embeds += 1
            if agreed.get("error"):
                embeds.append(agreed["error"])
    return {
        "records_with_a_failed_call": ratio(sum(bool(r.get("failed")) for _, r in pairs), len(pairs)),
        "chat": _by_code(chat, len(pairs)),
        "invocations": _by_code(invocation, n_invocations),
        "round_trip_chat": _by_code(trips, n_trips),
        "embed": _by_code(embeds, n_embeds),
    }


def _agreement(pairs: Sequence[Any], seed: int, enabled: bool, analysis: Analysis) -> dict[str, Any]:
    if not enabled:
        return {"skipped": "--no-agreement: no Embed calls were made"}
    encoders: Counter[str] = Counter()
    rows: list[tuple[str, str, dict[str, Any]]] = []  # (record id, encoder id, item)
    without = 0
    for _, result in pairs:
        agreed = result.get("agreement")
        generated = sum(1 for inv in result.get("invocations") or [] if inv.get("file"))
        if not agreed or agreed.get("error"):
            without += generated
            continue
        for item in agreed.get("items") or []:
            encoders[agreed.get("encoder_id", "")] += 1
            rows.append((result["id"], agreed.get("encoder_id", ""), item))
    encoder_id = encoders.most_common(1)[0][0] if encoders else None
    other_encoder = sum(1 for _, e, _ in rows if e != encoder_id)
    by_modality: dict[str, Any] = {}
    matched_all: list[float] = []
    shuffled_all: list[float] = []
    for kind in MEDIA_KINDS:
        chosen = [(rid, item) for rid, e, item in rows if e == encoder_id and item["modality"] == kind]
        if not chosen:
            continue
        items = np.stack([decode_vector(item["item_vector"]) for _, item in chosen])
        texts = np.stack([decode_vector(item["text_vector"]) for _, item in chosen])
        scores = agreement(items, texts, [rid for rid, _ in chosen], seed)
        analysis.agreement[kind] = scores
        by_modality[kind] = scores.summary()
        if scores.shuffled is not None:
            matched_all += scores.matched
            shuffled_all += scores.shuffled
    pooled = Agreement(len(matched_all), matched_all, shuffled_all, "no modality has a defined baseline")
    overall = (
        pooled.summary() if matched_all else Agreement(0, [], None, "no modality has a defined baseline").summary()
    )
    overall["note"] = "pooled over the modalities whose baseline is defined"
    return {
        "skipped": None,
        "encoder_id": encoder_id,
        "seed": seed,
        "by_modality": by_modality,
        "overall": overall,
        "items_without_scores": without,
        "items_from_another_encoder": other_encoder,
    }


def _round_trip(pairs: Sequence[Any]) -> dict[str, Any]:
    trips = [(r, res.get("round_trip") or {}) for r, res in pairs if r.round_trip is not None]
    asked = [(r, t) for r, t in trips if t.get("answer") is not None]
    names: dict[str, list[bool]] = {}
    for _, trip in asked:
        for name, hit in (trip.get("hits") or {}).items():
            names.setdefault(name, []).append(bool(hit))
    all_hit = sum(1 for _, t in asked if t.get("hits") and all(t["hits"].values()))
    return {
        "records": len(trips),
        "answered": len(asked),
        "no_generated_item": sum(1 for _, t in trips if t.get("skipped")),
        "failed": sum(1 for _, t in trips if t.get("error")),
        "attributes": {name: ratio(sum(v), len(v)) for name, v in sorted(names.items())},
        "all_attributes": ratio(all_hit, len(asked)),
        "all_attributes_of_all_records": ratio(all_hit, len(trips)),
    }


def _rows(pairs: Sequence[Any]) -> list[dict[str, Any]]:
    rows = []
    for record, result in pairs:
        pred = prediction(record, result)
        trip = result.get("round_trip") or {}
        agreed = result.get("agreement") or {}
        rows.append(
            {
                "id": record.id,
                "category": record.category,
                "expected": record.expected,
                "routed": result.get("routed"),
                "prediction": pred,
                "exact_match": None if record.reference is None else exact_match(pred, record.reference),
                "token_f1": None if record.reference is None else token_f1(pred, record.reference),
                "chat_error": (result.get("chat_error") or {}).get("code"),
                "round_trip_error": (trip.get("error") or {}).get("code"),
                "embed_error": (agreed.get("error") or {}).get("code"),
                "invocation_errors": [i["error"]["code"] for i in result.get("invocations") or [] if i.get("error")],
                "media": [i["file"] for i in result.get("invocations") or [] if i.get("file")],
                "round_trip_hits": trip.get("hits") if trip.get("answer") is not None else None,
                "agreement": [item["matched"] for item in agreed.get("items") or []],
            }
        )
    return rows


def analyse(
    records: Sequence[EvalRecord],
    stored: dict[str, dict[str, Any]],
    *,
    seed: int = 0,
    agreement_enabled: bool = True,
    run: dict[str, Any] | None = None,
) -> Analysis:
    """Every number of the report from the stored results (``ResultStore.load().results``) and the records."""
    pairs, data = select(records, stored)
    analysis = Analysis(report={})
    analysis.report = {
        "version": REPORT_VERSION,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": run or {},
        "data": data,
        "definitions": DEFINITIONS,
        "routing": _routing(pairs),
        "prompts": _prompts(pairs, analysis),
        "latency": _latency(pairs, analysis),
        "failures": _failures(pairs),
        "agreement": _agreement(pairs, seed, agreement_enabled, analysis),
        "round_trip": _round_trip(pairs),
        "records": _rows(pairs),
    }
    return analysis


# -- Markdown ----------------------------------------------------------------------------------------------


def fmt_ratio(r: dict[str, Any]) -> str:
    if r["value"] is None:
        return f"n/a ({r['numerator']}/{r['denominator']})"
    return f"{100 * r['value']:.1f}% ({r['numerator']}/{r['denominator']})"


def fmt_mean(m: dict[str, Any], digits: int = 3) -> str:
    return "n/a (0)" if m["mean"] is None else f"{m['mean']:.{digits}f} (n={m['count']})"


def fmt_number(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def fmt_seconds(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


HOW_TO_READ = (
    "**How to read this.** Each record is one chat through the gateway. *Routing* compares the modality the "
    "answer went to (the first invocation of its meta-response, or text) with the expected one; the confusion "
    "matrix shows where the misses went (the `error` column: chats that failed before a meta-response). *Prompts* "
    "score the prompt the model wrote for the generator (or its text answer) against the reference: first over "
    "the records routed correctly (how good the prompt is when the route is right), then over every record with a "
    "reference (a wrong route or a failed chat scores 0). *Latency* is measured by this client, so it includes "
    "the network. *Agreement* is a relative number: a cosine similarity in the encoder's space means little by "
    "itself; only the gap between an item's own prompt (matched) and other records' prompts (shuffled) says the "
    "items follow their prompts. *Round trip* shows the first generated item to the model again with a question "
    "and checks that the expected words appear in the answer. Every rate shows its numerator and denominator; "
    "n/a means there was nothing to count."
)


def render_markdown(report: dict[str, Any]) -> str:
    out = ["# ModaVerse evaluation", ""]
    run, data = report["run"], report["data"]
    if run:
        out.append(
            f"Benchmark `{run.get('data', '?')}` against `{run.get('target', '?')}`, seed {run.get('seed', '?')}, "
            f"generated {report['generated_at']}."
        )
        out.append("")
    out.append(
        f"{data['evaluated']} of {data['records']} records evaluated; {data['not_run']} not run yet"
        + (
            f"; {data['changed_not_rerun']['count']} changed since their result"
            if data["changed_not_rerun"]["count"]
            else ""
        )
        + "."
    )
    ignored = data["ignored_not_in_data"]
    if ignored["count"]:
        out.append(
            f"{ignored['count']} stored result(s) are for ids no longer in the benchmark file and are ignored: "
            + ", ".join(f"`{i}`" for i in ignored["ids"])
            + (" …" if ignored["count"] > len(ignored["ids"]) else "")
            + "."
        )
    out += ["", HOW_TO_READ, ""]

    routing = report["routing"]
    out += ["## Routing", ""]
    out.append(
        f"Accuracy: **{fmt_ratio(routing['accuracy'])}** of all records; "
        f"{fmt_ratio(routing['accuracy_of_answered'])} of the chats that reached a meta-response."
    )
    out.append("")
    out += _table(["category", "routing accuracy"], [[c, fmt_ratio(r)] for c, r in routing["by_category"].items()])
    confusion = routing["confusion"]
    out.append("Confusion matrix (rows: expected, columns: routed):")
    out.append("")
    out += _table(
        ["expected \\ routed", *confusion["routed"]],
        [[e, *(confusion["counts"][e].get(x, 0) for x in confusion["routed"])] for e in confusion["expected"]],
    )

    prompts = report["prompts"]
    out += ["## Prompts and text answers", ""]
    out.append(
        "The prediction is the first invocation's prompt (expected image/audio/video) or the text answer "
        "(expected text), against `reference`."
    )
    out.append("")
    rows = [
        [
            "routed correctly",
            fmt_ratio(prompts["routed_correctly"]["exact_match"]),
            fmt_mean(prompts["routed_correctly"]["token_f1"]),
        ],
        [
            "all records with a reference",
            fmt_ratio(prompts["all_with_reference"]["exact_match"]),
            fmt_mean(prompts["all_with_reference"]["token_f1"]),
        ],
    ]
    out += _table(["over", "exact match", "token F1"], rows)
    by_cat = prompts["by_category_routed_correctly"]
    if by_cat:
        out.append("Per category (routed correctly):")
        out.append("")
        out += _table(
            ["category", "exact match", "token F1"],
            [[c, fmt_ratio(s["exact_match"]), fmt_mean(s["token_f1"])] for c, s in by_cat.items()],
        )

    latency = report["latency"]
    out += ["## Latency (seconds, as this client measured)", ""]
    lat_rows = [
        [name, s["count"], fmt_seconds(s["p50"]), fmt_seconds(s["p95"]), fmt_seconds(s["p99"])]
        for name, s in (
            ("first token", latency["first_token"]),
            ("meta-response", latency["meta_response"]),
            ("total chat", latency["total"]),
            ("round-trip chat", latency["round_trip"]),
        )
    ]
    for modality, both in latency["generators"].items():
        for how in ("seen", "reported"):
            s = both[how]
            lat_rows.append(
                [
                    f"{modality} generator ({how})",
                    s["count"],
                    fmt_seconds(s["p50"]),
                    fmt_seconds(s["p95"]),
                    fmt_seconds(s["p99"]),
                ]
            )
    out += _table(["what", "count", "p50", "p95", "p99"], lat_rows)
    out.append(
        "Generator *seen*: from InvocationStarted to InvocationDone as this client received them; *reported*: "
        "InvocationDone.elapsed_seconds from the gateway."
    )
    out.append("")

    failures = report["failures"]
    out += ["## Failures", ""]
    out.append(
        f"Records whose chat, round-trip chat or Embed call failed (what `--retry-failed` runs again): "
        f"{fmt_ratio(failures['records_with_a_failed_call'])}. A failed invocation (a generator's error inside a "
        "chat that answered) is an outcome of the deployment, counted below, not retried."
    )
    out.append("")
    fail_rows = []
    for name, key in (
        ("chat", "chat"),
        ("invocation", "invocations"),
        ("round-trip chat", "round_trip_chat"),
        ("embed", "embed"),
    ):
        part = failures[key]
        if not part["by_code"]:
            fail_rows.append([name, "-", f"0 of {part['denominator']}", ""])
        for code, info in part["by_code"].items():
            fail_rows.append([name, code, f"{info['count']} of {part['denominator']}", info["example"]])
    out += _table(["where", "code", "count", "example message"], fail_rows)

    agreed = report["agreement"]
    out += ["## Cross-modal agreement", ""]
    if agreed.get("skipped"):
        out += [f"Skipped ({agreed['skipped']}).", ""]
    else:
        out.append(
            (
                "No generated item was scored. "
                if agreed["encoder_id"] is None
                else f"Encoder `{agreed['encoder_id']}`. "
            )
            + f"The shuffled baseline pairs each item with another record's prompt "
            f"of the same modality (seed {agreed['seed']}). Only the difference means something."
        )
        out.append("")
        ag_rows = []
        for modality, s in [*agreed["by_modality"].items(), ("overall", agreed["overall"])]:
            ag_rows.append(
                [
                    modality,
                    s["items"],
                    fmt_number(s["matched_mean"]),
                    fmt_number(s["shuffled_mean"]),
                    fmt_number(s["difference"]),
                    fmt_ratio(s["matched_beats_shuffled"]),
                    s["baseline"],
                ]
            )
        out += _table(
            ["modality", "items", "matched", "shuffled", "difference", "matched > shuffled", "baseline"], ag_rows
        )
        extra = []
        if agreed["items_without_scores"]:
            extra.append(f"{agreed['items_without_scores']} generated item(s) have no score (their Embed call failed)")
        if agreed["items_from_another_encoder"]:
            extra.append(
                f"{agreed['items_from_another_encoder']} item(s) were scored by another encoder and are left out"
            )
        if extra:
            out += ["; ".join(extra) + ".", ""]

    trip = report["round_trip"]
    out += ["## Round trip", ""]
    out.append(
        f"{trip['records']} record(s) with a round trip: {trip['answered']} answered, {trip['no_generated_item']} "
        f"without a generated item to ask about, {trip['failed']} failed."
    )
    out.append("")
    trip_rows = [[name, fmt_ratio(r)] for name, r in trip["attributes"].items()]
    trip_rows.append(["all attributes (answered)", fmt_ratio(trip["all_attributes"])])
    trip_rows.append(["all attributes (all round-trip records)", fmt_ratio(trip["all_attributes_of_all_records"])])
    out += _table(["attribute", "accuracy"], trip_rows)

    out += ["## Records", ""]
    record_rows = []
    for row in report["records"]:
        problems = ([row["chat_error"]] if row["chat_error"] else []) + row["invocation_errors"]
        problems += [f"round trip {row['round_trip_error']}"] if row["round_trip_error"] else []
        problems += [f"embed {row['embed_error']}"] if row["embed_error"] else []
        hits = row["round_trip_hits"]
        record_rows.append(
            [
                f"`{row['id']}`",
                row["category"] or "",
                row["expected"],
                row["routed"],
                "" if row["token_f1"] is None else f"{row['token_f1']:.2f}",
                " ".join(f"[{Path(m).name}]({m})" for m in row["media"]),
                "" if hits is None else " ".join(f"{k}:{'✓' if v else '✗'}" for k, v in hits.items()),
                ", ".join(problems),
            ]
        )
    out += _table(["id", "category", "expected", "routed", "F1", "media", "round trip", "failures"], record_rows)
    out += ["Plots: [confusion.png](confusion.png), [latency.png](latency.png), [scores.png](scores.png).", ""]
    return "\n".join(out)


def write_report(out_dir: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(report), encoding="utf-8")
    return json_path, md_path

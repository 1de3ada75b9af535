"""Writes the tiny recipe's results table into docs/training.md (between two marker comments)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

START, END = "<!-- tiny-results:start -->", "<!-- tiny-results:end -->"


def results_table(summary: dict[str, Any]) -> str:
    """Validation (what the recipe was tuned on) beside test (new media in held-out wordings); the text
    under the table says which figure to quote."""
    val, test = summary.get("eval") or {}, summary.get("test") or {}
    recipe = summary.get("recipe") or {}
    config = summary.get("config") or {}

    def pct(ev: dict[str, Any], key: str) -> str:
        return f"{100 * float(ev[key]):.1f}%" if key in ev else "n/a"

    def both(key: str) -> tuple[str, str]:
        return pct(val, key), pct(test, key)

    def split_size(ev: dict[str, Any]) -> str:
        return f"{ev.get('count', 0)} ({ev.get('describe_count', 0)} image descriptions)"

    scores = [
        ("examples", (split_size(val), split_size(test))),
        ("modality routing", both("routing")),
        ("exact prompt match", both("exact")),
        ("prompt token F1", both("token_f1")),
        ("colour+shape on new images", both("describe")),
        ("… colour alone", both("describe_colour")),
        ("… shape alone", both("describe_shape")),
    ]
    lines = ["| measure | validation (tuned on) | test |", "|---|---|---|"]
    lines += [f"| {k} | {v} | {t} |" for k, (v, t) in scores]
    setup = [
        ("trainable parameters", f"{int(summary.get('trainable_parameters', 0)):,} (base LLM trained: tiny only)"),
        (
            "world",
            f"{recipe.get('images', '?')} images, {recipe.get('audio', '?')} audio, {recipe.get('video', '?')} video",
        ),
        ("steps x batch", f"{config.get('steps', '?')} x {config.get('batch_size', '?')}"),
        (
            "lr: LoRA+rows / adaptor / base",
            "{} / {} / {}".format(*(config.get(k, "?") for k in ("lr", "adaptor_lr", "base_lr"))),
        ),
        ("time: data / features / training", _times(summary)),
        ("time: total", f"{float(summary.get('total_seconds', 0.0)) / 60:.1f} min"),
    ]
    lines += ["", "| setup | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in setup]]
    return "\n".join(lines)


def _times(summary: dict[str, Any]) -> str:
    parts = [summary.get("data_seconds", 0.0), summary.get("feature_seconds", 0.0), summary.get("train_seconds", 0.0)]
    return " / ".join(f"{float(p):.0f} s" for p in parts)


def write_results(path: Path, summary: dict[str, Any]) -> None:
    text = path.read_text(encoding="utf-8") if path.is_file() else f"# Training\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{results_table(summary)}\n{END}{tail}", encoding="utf-8")

"""The report's figures (matplotlib, imported only here, only when drawing: ``pip install 'modaverse[eval]'``).

``confusion.png``: expected × routed counts. ``latency.png``: a histogram per route (first token, meta-response,
total chat, each generator modality). ``scores.png``: token F1, and agreement matched vs shuffled per modality.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .report import Analysis

if TYPE_CHECKING:
    from matplotlib.axes import Axes

INSTALL_HINT = "pip install 'modaverse[eval]'"


class PlotsUnavailable(Exception):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise :class:`PlotsUnavailable` (saying what to install) unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotsUnavailable(f"the evaluation's plots need matplotlib: {INSTALL_HINT}") from None


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def confusion(report: dict[str, Any], path: Path) -> Path:
    from matplotlib.figure import Figure

    spec = report["routing"]["confusion"]
    rows, cols = spec["expected"], spec["routed"]
    counts = [[spec["counts"][e].get(x, 0) for x in cols] for e in rows]
    fig = Figure(figsize=(1.2 * len(cols) + 2, 1.0 * len(rows) + 1.8))
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues", vmin=0)
    ax.set_xticks(range(len(cols)), labels=cols)
    ax.set_yticks(range(len(rows)), labels=rows)
    ax.set_xlabel("routed")
    ax.set_ylabel("expected")
    top = max((max(r) for r in counts), default=0)
    for i, row in enumerate(counts):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "black")
    accuracy = report["routing"]["accuracy"]
    title = "routing" if accuracy["value"] is None else f"routing: {100 * accuracy['value']:.1f}% correct"
    ax.set_title(f"{title} ({accuracy['numerator']}/{accuracy['denominator']})")
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def latency(analysis: Analysis, path: Path) -> Path:
    from matplotlib.figure import Figure

    series = analysis.latencies or {"first token": [], "meta-response": [], "total chat": []}
    cols = 2
    rows = (len(series) + cols - 1) // cols
    fig = Figure(figsize=(5 * cols, 3 * rows))
    for n, (name, values) in enumerate(series.items(), start=1):
        ax = fig.add_subplot(rows, cols, n)
        ax.set_title(f"{name} (n={len(values)})")
        if values:
            ax.hist(values, bins=min(30, max(5, len(values))), color="tab:blue")
            ax.set_xlabel("seconds")
            ax.set_ylabel("count")
        else:
            _empty(ax, "no data")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def scores(analysis: Analysis, path: Path) -> Path:
    from matplotlib.figure import Figure

    agreed = [(m, a) for m, a in analysis.agreement.items()]
    fig = Figure(figsize=(5 * (1 + max(1, len(agreed))), 3.5))
    panels = 1 + max(1, len(agreed))
    ax = fig.add_subplot(1, panels, 1)
    ax.set_title("token F1 vs reference")
    if analysis.f1_all or analysis.f1_routed_correctly:
        bins = [i / 10 for i in range(11)]
        ax.hist(analysis.f1_all, bins=bins, alpha=0.5, label=f"all with a reference (n={len(analysis.f1_all)})")
        ax.hist(
            analysis.f1_routed_correctly,
            bins=bins,
            alpha=0.5,
            label=f"routed correctly (n={len(analysis.f1_routed_correctly)})",
        )
        ax.set_xlabel("token F1")
        ax.set_ylabel("records")
        ax.legend(fontsize="small")
    else:
        _empty(ax, "no records with a reference")
    if not agreed:
        skipped = analysis.report.get("agreement", {}).get("skipped")
        _empty(fig.add_subplot(1, panels, 2), "agreement skipped" if skipped else "no agreement scores")
    for n, (modality, scores_) in enumerate(agreed, start=2):
        ax = fig.add_subplot(1, panels, n)
        ax.set_title(f"{modality}: prompt ↔ item cosine (n={scores_.items})")
        ax.hist(scores_.matched, bins=20, alpha=0.5, label="matched prompt")
        if scores_.shuffled is not None:
            ax.hist(scores_.shuffled, bins=20, alpha=0.5, label="shuffled prompt")
        else:
            ax.text(0.02, 0.95, "baseline undefined", transform=ax.transAxes, va="top", color="gray")
        ax.set_xlabel("cosine similarity")
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def write_plots(analysis: Analysis, out_dir: Path) -> list[Path]:
    """``confusion.png``, ``latency.png`` and ``scores.png`` in ``out_dir``; PlotsUnavailable without matplotlib."""
    require_matplotlib()
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        confusion(analysis.report, out_dir / "confusion.png"),
        latency(analysis, out_dir / "latency.png"),
        scores(analysis, out_dir / "scores.png"),
    ]

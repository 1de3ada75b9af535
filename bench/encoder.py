"""Encoder throughput with micro-batching on vs off, side by side, in one run.

Starts two real encoder processes at once (tiny profile unless MODAVERSE_PROFILE says
otherwise), batching off and on, and drives them in turn with closed-loop gRPC clients:
each round measures both servers at every concurrency, alternating which goes first, so
slow drifts of a shared machine hit both alike. Prints items/s (median over rounds), the
per-round speed-up (median and range) and latency percentiles.

``--model`` first prints the forward pass alone (no server) at several batch sizes: the
ceiling on what batching can save inside the model on this machine.

Usage: python bench/encoder.py [--kind image|audio|video] [--seconds 4] [--rounds 3]
[--concurrency 1 8 32] [--model]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import LoadResult, closed_loop, machine, percentile, print_table
from modaverse.local import LocalService, service_executable
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from modaverse_runtime import samples

MODALITY = {"image": common_pb2.MODALITY_IMAGE, "audio": common_pb2.MODALITY_AUDIO, "video": common_pb2.MODALITY_VIDEO}
MODES = ("off", "on")


def make_payloads(kind: str, n: int = 16) -> list[bytes]:
    shapes, colors = ["circle", "square", "triangle", "star", "cross"], ["red", "green", "blue", "yellow"]
    if kind == "image":
        return [samples.make_image(shapes[i % 5], colors[i % 4], seed=i) for i in range(n)]
    if kind == "audio":
        return [samples.make_audio(220.0 + 40 * i, 2.0) for i in range(n)]
    return [samples.make_video(shapes[i % 5], colors[i % 4], seconds=2.0, size=128) for i in range(4)]


async def measure(target: str, kind: str, concurrency: int, seconds: float) -> LoadResult:
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

        return await closed_loop(call, concurrency, seconds)


def model_table(kind: str, batch_sizes: list[int], reps: int) -> None:
    """Forward pass alone, through the service's own model loading and preprocessing."""
    import torch

    from modaverse_encoder.base import MediaInput
    from modaverse_encoder.imagebind_encoder import ImageBindEncoder
    from modaverse_encoder.settings import EncoderSettings
    from modaverse_runtime.media import MediaKind

    encoder = ImageBindEncoder(EncoderSettings())
    encoder.load()
    media_kind = MediaKind(kind)
    items = [encoder.preprocess(MediaInput(media_kind, data)) for data in make_payloads(kind)]

    def batch_of(n: int) -> list[torch.Tensor]:
        return [items[i % len(items)] for i in range(n)]

    per_item: dict[int, list[float]] = {b: [] for b in batch_sizes}
    for b in batch_sizes:  # warm-up: first calls at a new shape allocate and pick kernels
        encoder.forward(media_kind, batch_of(b))
    for _ in range(reps):  # interleaved, so drifts of the machine hit every size alike
        for b in batch_sizes:
            calls = max(1, 32 // b)
            start = time.perf_counter()
            for _ in range(calls):
                encoder.forward(media_kind, batch_of(b))
            per_item[b].append((time.perf_counter() - start) / (calls * b) * 1000)
    encoder.unload()
    base = statistics.median(per_item[batch_sizes[0]])
    print(f"\nencoder model alone, {kind} items, median of {reps} interleaved reps; {machine()}\n")
    rows = [[b, statistics.median(v), min(v), f"{base / statistics.median(v):.2f}x"] for b, v in per_item.items()]
    print_table(["batch size", "ms/item", "best ms/item", f"vs batch {batch_sizes[0]}"], rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=list(MODALITY), default="image")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per cell and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-items", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for the servers (0: torch default)")
    parser.add_argument("--model", action="store_true", help="first time the forward pass alone by batch size")
    args = parser.parse_args()

    if args.model:
        model_table(args.kind, [1, 2, 4, 8, args.max_items], reps=7)

    servers: dict[str, LocalService] = {}
    for mode in MODES:
        env = {
            "MODAVERSE_BATCHING": "true" if mode == "on" else "false",
            "MODAVERSE_BATCH_MAX_ITEMS": str(args.max_items),
            "MODAVERSE_MAX_CONCURRENT_RPCS": "1024",
        }
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        servers[mode] = LocalService(service_executable("modaverse-encoder"), env=env).launch()
    results: dict[tuple[str, int], list[LoadResult]] = {(m, c): [] for m in MODES for c in args.concurrency}
    try:
        for server in servers.values():
            server.wait_ready()
        for r in range(args.rounds):
            order = MODES if r % 2 == 0 else MODES[::-1]
            for c in args.concurrency:
                for mode in order:
                    results[mode, c].append(asyncio.run(measure(servers[mode].target, args.kind, c, args.seconds)))
    finally:
        for server in servers.values():
            server.stop()

    cells = f"{args.rounds} rounds x {args.seconds:.0f}s per cell"
    print(f"\nencoder, {args.kind} items, 1 item/request, {cells}; {machine()}\n")
    rows = []
    for c in args.concurrency:
        off, on = results["off", c], results["on", c]
        ratios = [b.items_per_s / a.items_per_s for a, b in zip(off, on, strict=True)]
        off_lat = [x for res in off for x in res.latencies]
        on_lat = [x for res in on for x in res.latencies]
        rows.append(
            [
                c,
                statistics.median(res.items_per_s for res in off),
                statistics.median(res.items_per_s for res in on),
                f"{statistics.median(ratios):.2f}x",
                f"{min(ratios):.2f}-{max(ratios):.2f}x",
                percentile(off_lat, 0.5) * 1000,
                percentile(on_lat, 0.5) * 1000,
                percentile(off_lat, 0.99) * 1000,
                percentile(on_lat, 0.99) * 1000,
            ]
        )
    print_table(
        [
            "concurrency",
            "items/s off",
            "items/s on",
            "speed-up",
            "range",
            "p50 ms off",
            "p50 ms on",
            "p99 ms off",
            "p99 ms on",
        ],
        rows,
    )


if __name__ == "__main__":
    main()

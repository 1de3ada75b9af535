"""Web front door benchmark: the HTTP hop's added latency over the SDK's direct gRPC call.

The same text-only chat turn, interleaved in one run, N requests per path:
  SDK ``AsyncClient.chat()`` straight to the gateway (the baseline), the same again (the noise floor),
  ``POST /v1/chat/completions`` through the web front door with a keep-alive ``httpx.AsyncClient``
  (and with the official ``openai`` client), then the streamed forms: SDK ``stream()`` (baseline and
  again) vs ``stream: true`` server-sent events read to ``[DONE]``.
"added median" is the median of the paired differences to the baseline call of the same round (the
paths run in a new random order every round, so no path always runs after another, and each call is
followed by an untimed pause so the server's after-work is not billed to the next); "added p99" is the
row's p99 minus its baseline's p99.

Encoder, LLM, gateway and the web app (real uvicorn, as tests/web/stack.py starts it) run in-process
on loopback on one event loop with the clients, like bench/gateway.py; ``--web process`` runs the web
front door as its own ``modaverse-web serve`` process instead (as deployed). The LLM is the scripted
test server (tests/integration/scripted_llm.py) by default: deterministic, ~0 ms, a plain [TEXT]
answer that the web service streams as it comes, so the figures are the hop and not the model;
``--llm tiny`` uses the real tiny Llama (8 tokens) instead, as bench/gateway.py does.
Usage: python bench/web.py [--requests 300] [--llm scripted|tiny] [--web in-process|process]
                           [--pause-ms 2] [--no-openai]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, percentile, print_table  # noqa: E402
from modaverse import AsyncClient, MetaResponse  # noqa: E402
from modaverse.local import LocalWebService, service_executable  # noqa: E402
from modaverse_encoder.tiny import ensure_tiny_encoder  # noqa: E402
from tests.integration.encoder_fixtures import start_encoder  # noqa: E402
from tests.integration.gateway_fixtures import start_gateway  # noqa: E402
from tests.integration.llm_fixtures import start_llm  # noqa: E402
from tests.integration.scripted_llm import start_scripted_llm  # noqa: E402
from tests.web.stack import start_web, web_settings  # noqa: E402

PROMPT = "Hello! What can you do for me today?"
MAX_TOKENS = 8
WARMUP = 5
CHAT = "/v1/chat/completions"
SDK_CHAT, SDK_STREAM = "SDK chat() direct to the gateway", "SDK stream() direct to the gateway"
BASELINES = {
    SDK_CHAT: SDK_CHAT,
    "SDK chat() again (the noise floor)": SDK_CHAT,
    "HTTP POST, httpx keep-alive": SDK_CHAT,
    "HTTP POST, openai client": SDK_CHAT,
    SDK_STREAM: SDK_STREAM,
    "SDK stream() again (the noise floor)": SDK_STREAM,
    "HTTP stream: true (SSE to [DONE]), httpx": SDK_STREAM,
    "HTTP stream: true, openai client": SDK_STREAM,
}
BODY: dict[str, Any] = {
    "model": "modaverse",
    "messages": [{"role": "user", "content": PROMPT}],
    "max_tokens": MAX_TOKENS,
}


async def start_backends(model_dir: Path, llm_kind: str) -> tuple[list[Callable[[], Awaitable[Any]]], str]:
    """Encoder, LLM and gateway in-process; returns their stop calls (in order) and the gateway target."""
    encoder = await start_encoder(model_dir)
    if llm_kind == "tiny":
        llm = await start_llm(model_dir)
        llm_target, stop_llm = llm.target, llm.stop
    else:
        server, _ = await start_scripted_llm()
        llm_target = f"127.0.0.1:{server.port}"

        async def stop_llm() -> None:
            await server.stop(1)

    gateway = await start_gateway(encoder.target, llm_target, {})

    async def stop_gateway() -> None:
        await gateway.stop(1)

    return [stop_gateway, stop_llm, encoder.stop], f"127.0.0.1:{gateway.port}"


async def start_front_door(gateway: str, mode: str) -> tuple[str, Callable[[], Awaitable[Any]]]:
    """The web front door on a loopback port: its URL and its stop call."""
    if mode == "process":
        service = LocalWebService(service_executable("modaverse-web"), gateway=gateway)
        await asyncio.to_thread(service.start, 60)
        return service.url.rstrip("/"), lambda: asyncio.to_thread(service.stop)
    web = await start_web(web_settings(gateway))
    return web.url, web.stop


async def measure(
    model_dir: Path,
    requests: int,
    llm_kind: str,
    web_mode: str,
    use_openai: bool,
    pause_s: float,
) -> list[list[object]]:
    stops, gateway = await start_backends(model_dir, llm_kind)
    url, stop_web = await start_front_door(gateway, web_mode)
    sdk = AsyncClient(gateway)
    http = httpx.AsyncClient(base_url=url, timeout=60, trust_env=False)  # keep-alive: one connection, reused

    async def sdk_chat() -> str:
        return (await sdk.chat(PROMPT, max_tokens=MAX_TOKENS)).text

    async def sdk_stream() -> str:
        text = ""
        async for event in sdk.stream(PROMPT, max_tokens=MAX_TOKENS):
            if isinstance(event, MetaResponse):
                text = event.answer
        return text

    async def http_chat() -> str:
        reply = await http.post(CHAT, json=BODY)
        reply.raise_for_status()
        content: str = reply.json()["choices"][0]["message"]["content"]
        return content

    async def http_stream() -> str:
        parts: list[str] = []
        done = False
        async with http.stream("POST", CHAT, json={**BODY, "stream": True}) as reply:
            reply.raise_for_status()
            async for line in reply.aiter_lines():  # to the end of the body, so the connection is reused
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    for choice in json.loads(line[len("data: ") :])["choices"]:
                        parts.append(choice["delta"].get("content") or "")
        assert done, "the stream ended without [DONE]"
        return "".join(parts)

    paths: dict[str, Callable[[], Awaitable[str]]] = {
        SDK_CHAT: sdk_chat,
        "SDK chat() again (the noise floor)": sdk_chat,
        "HTTP POST, httpx keep-alive": http_chat,
        SDK_STREAM: sdk_stream,
        "SDK stream() again (the noise floor)": sdk_stream,
        "HTTP stream: true (SSE to [DONE]), httpx": http_stream,
    }
    closers: list[Callable[[], Awaitable[Any]]] = [sdk.close, http.aclose]
    if use_openai:
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        oai = AsyncOpenAI(
            base_url=f"{url}/v1", api_key="unused", max_retries=0, http_client=DefaultAsyncHttpxClient(trust_env=False)
        )
        closers.append(oai.close)

        async def openai_chat() -> str:
            reply = await oai.chat.completions.create(
                model="modaverse", messages=BODY["messages"], max_tokens=MAX_TOKENS
            )
            return reply.choices[0].message.content or ""

        async def openai_stream() -> str:
            stream = await oai.chat.completions.create(
                model="modaverse", messages=BODY["messages"], max_tokens=MAX_TOKENS, stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        paths["HTTP POST, openai client"] = openai_chat
        paths["HTTP stream: true, openai client"] = openai_stream
    names = [n for n in BASELINES if n in paths]

    # Every path gives the same answer (the scripted LLM is deterministic), so they do the same work.
    answers = {name: await paths[name]() for name in names}
    if llm_kind == "scripted":
        assert len(set(answers.values())) == 1 and answers[SDK_CHAT], answers

    timings: dict[str, list[float]] = {name: [] for name in names}
    order = random.Random(0)
    for i in range(requests + WARMUP):  # interleaved so drift hits every path alike; the first rounds warm up
        for name in order.sample(names, len(names)):  # a new order every round: no path always follows another
            start = time.perf_counter()
            await paths[name]()
            if i >= WARMUP:
                timings[name].append(time.perf_counter() - start)
            await asyncio.sleep(pause_s)  # what the server still does after answering is not the next call's time
    for close in closers:
        await close()
    await stop_web()
    for stop in stops:
        await stop()

    rows: list[list[object]] = []
    for name in names:
        t, base = timings[name], timings[BASELINES[name]]
        p99 = percentile(t, 0.99) * 1000
        if name == BASELINES[name]:
            rows.append([name, statistics.median(t) * 1000, p99, "-", "-"])
            continue
        # The paired differences cancel drift shared by the two calls of a round.
        added = statistics.median(b - a for a, b in zip(base, t, strict=True)) * 1000
        rows.append(
            [name, statistics.median(t) * 1000, p99, f"{added:+.2f}", f"{p99 - percentile(base, 0.99) * 1000:+.2f}"]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300, help="measured requests per path")
    parser.add_argument("--llm", choices=["scripted", "tiny"], default="scripted")
    parser.add_argument("--web", choices=["in-process", "process"], default="in-process")
    parser.add_argument(
        "--pause-ms", type=float, default=2.0, help="idle time after each call (not timed), so it does not overlap"
    )
    parser.add_argument("--no-openai", action="store_true", help="skip the rows of the official openai client")
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="torch threads in this process (1 beats 2 on a 2-core machine)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    with tempfile.TemporaryDirectory(prefix="modaverse-bench-") as tmp:
        run(args, Path(tmp))


def run(args: argparse.Namespace, model_dir: Path) -> None:
    ensure_tiny_encoder(model_dir)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nweb front door (HTTP hop) benchmark, tiny profile; {machine()}; load average {load}\n")
    llm = "scripted LLM" if args.llm == "scripted" else f"tiny LLM, {MAX_TOKENS} tokens"
    web = "web app in-process (uvicorn)" if args.web == "in-process" else "web app as its own process"
    print(f"{args.requests} interleaved requests per path; text only, {llm}; {web}\n")
    rows = asyncio.run(
        measure(
            model_dir,
            args.requests,
            args.llm,
            args.web,
            not args.no_openai,
            args.pause_ms / 1000,
        )
    )
    print_table(["path", "median ms", "p99 ms", "added median ms", "added p99 ms"], rows)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average after: {load}")


if __name__ == "__main__":
    main()

"""A Vicuna-7B-shaped Llama (random weights, fp16) + a release-shaped LoRA served on the GPU.

Checks what CPU tests cannot: fp16 on CUDA loads and streams, batched greedy equals one at a time at
full width (4096), mixed adapters in one batch, and batching's throughput gain at concurrency 32.
Set MODAVERSE_GPU_LLM to a folder with base/ and adapters/default/ to reuse built artifacts.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from modaverse_llm.tiny import build_lora_adapter, build_tiny_tokenizer
from modaverse_protos.llm.v1 import llm_pb2

from ..integration.llm_fixtures import generate, media, request, start_llm, text, user

pytestmark = pytest.mark.needs_cuda


@pytest.fixture(scope="module")
def vicuna_shaped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    given = os.environ.get("MODAVERSE_GPU_LLM")
    if given and (Path(given) / "base").is_dir():
        yield Path(given)
        return
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("vicuna")
    build_tiny_tokenizer(root / "base")
    config = LlamaConfig(vocab_size=32006, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).half()
    model.save_pretrained(str(root / "base"))
    del model
    torch.cuda.empty_cache()
    build_lora_adapter(root / "base", root / "adapters" / "default", scale=0.02)
    yield root


def settings(root: Path) -> dict[str, object]:
    return {
        "profile": "full",
        "device": "cuda",
        "base_model": str(root / "base"),
        "adapters": {"default": root / "adapters" / "default"},
    }


def test_fp16_batched_equals_alone_and_throughput(vicuna_shaped: Path) -> None:
    async def run() -> None:
        running = await start_llm(vicuna_shaped, **settings(vicuna_shaped))
        try:
            info = await running.stub.Info(llm_pb2.InfoRequest())
            assert info.hidden_size == 4096 and info.dtype == 2  # float16
            rng = np.random.default_rng(0)
            reqs = [
                request(
                    [user(media(rng.standard_normal((1, 4096)).astype(np.float32)), text(f"describe {i}"))],
                    adapter=["", "base"][i % 2],
                    max_tokens=32,
                    stop=["\x00"],
                    temperature=0.0,
                )
                for i in range(32)
            ]
            alone = [(await generate(running.stub, r))[1] for r in reqs[:8]]
            together = await asyncio.gather(*(generate(running.stub, r) for r in reqs[:8]))
            # fp16 batched vs unbatched may differ in the last bits; greedy texts should still agree.
            same = sum(a.text == b.text for a, (_, b) in zip(alone, together, strict=True))
            assert same >= 7, f"{same}/8 batched answers equal the unbatched ones"
            start = time.perf_counter()
            results = await asyncio.gather(*(generate(running.stub, r) for r in reqs))
            tokens = sum(f.completion_tokens for _, f in results)
            print(f"\n7B fp16, 32 concurrent: {tokens / (time.perf_counter() - start):.0f} tokens/s")
            print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        finally:
            await running.stop()

    asyncio.run(run())

"""The whole chain with every service real: encoder → tiny Llama + LoRA → parser → generators.

The tiny LLM is untrained here (random weights), so its words are arbitrary; what must hold is
the wiring: media rows reach it, its stream reaches the client intact, usage is counted, and
whatever it wrote is parsed without error. (With the trained tiny model from `make train-tiny`
the same path draws pictures; see docs/training.md.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from modaverse import AsyncClient
from modaverse.types import Done, MetaResponse, TextDelta
from modaverse_runtime import samples

from .encoder_fixtures import start_encoder
from .gateway_fixtures import start_gateway
from .llm_fixtures import start_llm

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(model_dir: Path) -> AsyncIterator[AsyncClient]:
    encoder = await start_encoder(model_dir)
    llm = await start_llm(model_dir)
    gateway = await start_gateway(encoder.target, llm.target)
    sdk = AsyncClient(f"127.0.0.1:{gateway.port}", timeout=120)
    yield sdk
    await sdk.close()
    await gateway.stop(1)
    await llm.stop()
    await encoder.stop()


async def test_media_and_text_through_the_real_tiny_llm(client: AsyncClient) -> None:
    events = [
        e
        async for e in client.stream(
            "What is in this image, and what do you hear?",
            images=[samples.make_image("circle", "red")],
            audio=[samples.make_audio(440, 1.0)],
            max_tokens=12,
        )
    ]
    deltas = "".join(e.text for e in events if isinstance(e, TextDelta))
    meta = next(e for e in events if isinstance(e, MetaResponse))
    done = events[-1]
    assert isinstance(done, Done)
    assert meta.raw == deltas  # the client saw exactly what the LLM wrote
    assert 0 < done.completion_tokens <= 12
    assert done.prompt_tokens > 4  # template tokens plus the two media rows


async def test_list_models_names_the_real_services(client: AsyncClient) -> None:
    assert await client.list_models() == []  # no generators routed on this gateway

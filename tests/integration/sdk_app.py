"""A user's application: imports nothing of ModaVerse but the SDK (``modaverse``) and the stdlib.

tests/integration/test_sdk_standalone.py runs it with the python of a fresh virtualenv that holds only
the built SDK wheels, against a running tiny stack, and type-checks it against those wheels.

    python sdk_app.py GATEWAY IMAGE OUT_DIR   # prints one JSON report on stdout
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import modaverse
from modaverse import (
    API_VERSION,
    AsyncClient,
    ChatEvent,
    Client,
    Done,
    GenerationOptions,
    MetaResponse,
    TextDelta,
    Unavailable,
)

# The stack's LLM is scripted: a user text holding a meta-response is what it answers.
DRAW = "Here it is.\nModality: [IMAGE] Prompt: a red circle"


def names(events: list[ChatEvent]) -> list[str]:
    return [type(event).__name__ for event in events]


async def stream_async(target: str) -> list[ChatEvent]:
    async with AsyncClient(target, timeout=120) as client:
        return [event async for event in client.stream("Say something.")]


def main(target: str, image: Path, out: Path) -> dict[str, object]:
    report: dict[str, object] = {
        "sdk_version": modaverse.__version__,
        "api_version": API_VERSION,
        "sdk_file": modaverse.__file__,
    }
    with Client(target, timeout=120) as client:
        drawn = client.chat(DRAW, generators={"image": GenerationOptions(steps=2, seed=7)})
        report["text_to_image"] = {
            "text": drawn.text,
            "saved": [str(path) for path in drawn.save(out)],
            "mime_types": [media.mime_type for media in drawn.media],
            "modalities": [media.invocation.modality for media in drawn.media],
            "errors": [f"{error.code}: {error.message}" for error in drawn.errors],
        }

        described = client.chat("What is in this image?", images=[image])
        report["image_to_text"] = {"text": described.text, "media": len(described.media)}

        events = list(client.chat("Say something.", stream=True))
        report["stream"] = {
            "events": names(events),
            "text": "".join(event.text for event in events if isinstance(event, TextDelta)),
            "answer": next((event.answer for event in events if isinstance(event, MetaResponse)), None),
            "done": isinstance(events[-1], Done),
        }
        report["routes"] = sorted(route.modality for route in client.list_models())

    async_events = asyncio.run(stream_async(target))
    report["async_stream"] = {"events": names(async_events), "done": isinstance(async_events[-1], Done)}

    with Client("127.0.0.1:1", timeout=10) as nobody:  # nothing listens there
        try:
            nobody.chat("hello?")
            report["unreachable"] = "no error"
        except Unavailable as error:
            report["unreachable"] = error.code.name
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))))

"""The README's run command (`make demo`): the whole stack on the tiny profile, a real conversation.

Starts every service as its own process (encoder, LLM, three generators, gateway; tiny models,
built on first use — the LLM is the trained tiny model when `make train-tiny` has run), then holds
a conversation through the SDK covering text→text, text→image, image→text, audio→image,
text→video and text→audio, saving every generated file under outputs/ and printing where.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from modaverse import Client, GenerationOptions
from modaverse.stack import local_stack
from modaverse.types import ChatResult
from modaverse_runtime import samples

ROOT = Path(__file__).resolve().parent.parent
OUTPUTS = ROOT / "outputs"
SAMPLES = ROOT / "samples"


def write_samples() -> dict[str, Path]:
    SAMPLES.mkdir(exist_ok=True)
    import io
    import random

    import soundfile as sf

    from modaverse_training.shapes import AUDIO_RATE, render_sound

    buf = io.BytesIO()
    sf.write(buf, render_sound("a low hum", random.Random(7)), AUDIO_RATE, format="WAV")
    files = {
        "blue_square.png": samples.make_image("square", "blue", seed=3),
        "low_hum.wav": buf.getvalue(),
    }
    for name, data in files.items():
        (SAMPLES / name).write_bytes(data)
    return {name: SAMPLES / name for name in files}


def show(title: str, result: ChatResult, folder: Path) -> None:
    print(f"\n== {title}")
    if result.meta_response is not None:
        print(f"   meta-response: {result.meta_response.raw.strip()}")
    if result.text:
        print(f"   answer: {result.text}")
    for path in result.save(folder):
        print(f"   saved {path.relative_to(ROOT)}")
    for error in result.errors:
        print(f"   invocation {error.index} failed: {error.code} {error.message}")


def main() -> int:
    files = write_samples()
    started = time.perf_counter()
    print("starting the tiny stack (encoder, llm, image/video/audio generators, gateway) ...", flush=True)
    with local_stack(profile="tiny", log_dir=ROOT / ".modaverse" / "logs") as stack:
        print(f"gateway SERVING on {stack.target} after {time.perf_counter() - started:.0f}s", flush=True)
        fast = {m: GenerationOptions(seed=0) for m in ("image", "video", "audio")}
        image, sound = [files["blue_square.png"]], [files["low_hum.wav"]]
        conversation: list[tuple[str, str, list[Path], list[Path]]] = [
            ("text → text", "Hello! What can you do?", [], []),
            ("text → image", "Draw a red circle.", [], []),
            ("image → text", "What is in this image?", image, []),
            ("audio → image", "Draw a picture of this.", [], sound),
            ("text → video", "Make a video of a green star.", [], []),
            ("text → audio", "Make the sound of a high beep.", [], []),
        ]
        with Client(stack.target, timeout=300) as client:
            for index, (title, text, images, audio) in enumerate(conversation, start=1):
                result = client.chat(text, images=images, audio=audio, generators=fast)
                show(f"{title}: {text!r}", result, OUTPUTS / f"{index}")
    print(f"\noutputs are in {OUTPUTS.relative_to(ROOT)}/; the stack stopped cleanly (SIGTERM → drain → unload)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

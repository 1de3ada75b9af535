"""The README's run command (`make demo`): the whole stack on the tiny profile, a real conversation.

Starts every service as its own process (encoder, LLM, three generators, gateway; tiny models,
built on first use — the LLM is the trained tiny model when `make train-tiny` has run), and the web
front door when `modaverse-web` is installed (its playground's URL is printed), then holds a
conversation through the SDK covering text→text, text→image, image→text, audio→image, text→video
and text→audio, saving every generated file under outputs/ and printing where.

    python scripts/demo.py           # the conversation, then the stack stops
    python scripts/demo.py --keep    # ... then the stack (and the playground) stays up until Ctrl-C
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

from modaverse import Client, GenerationOptions
from modaverse.stack import WEB_PORT, local_stack, web_lines
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


def free_port(preferred: int) -> int:
    """``preferred`` when nothing listens there on loopback, else 0 (any free port)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return 0
    return preferred


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the stack and the playground up until Ctrl-C")
    args = parser.parse_args(argv)
    files = write_samples()
    started = time.perf_counter()
    print("starting the tiny stack (encoder, llm, image/video/audio generators, gateway, web) ...", flush=True)
    with local_stack(profile="tiny", log_dir=ROOT / ".modaverse" / "logs", web_port=free_port(WEB_PORT)) as stack:
        print(f"gateway SERVING on {stack.target} after {time.perf_counter() - started:.0f}s", flush=True)
        for line in web_lines(stack):
            print(line, flush=True)
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
                drawn = [m.data for m in result.media if m.mime_type.startswith("image/")]
                if title == "text → image" and drawn:
                    back = client.chat("What is in this image?", images=drawn[:1], meta_response_only=True)
                    print(f"   round trip: shown its own image, the model answers {back.text.strip()!r}")
        if args.keep:
            where = f"; playground: {stack.web_url}" if stack.web_url else ""
            print(f"\nthe stack stays up (gateway {stack.target}{where}); Ctrl-C stops it", flush=True)
            try:
                while all(s.proc is None or s.proc.poll() is None for s in stack.processes().values()):
                    time.sleep(0.5)
                print("a service exited; stopping the stack", flush=True)
            except KeyboardInterrupt:
                pass
        elif stack.web_url:
            print(
                "\n(the playground stops with the demo; `python scripts/demo.py --keep` or `modaverse up` keeps it up)"
            )
    print(f"\noutputs are in {OUTPUTS.relative_to(ROOT)}/; the stack stopped cleanly (SIGTERM → drain → unload)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The README's run command (`make demo`): real tiny models, a real server, real media.

Writes sample media (shapes, a tone, a moving shape), starts the encoder service as its
own process (building the tiny profile's artifacts on first use), encodes everything
through the SDK and prints what came back, then shuts the server down with SIGTERM.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from modaverse import EncoderClient, media_from_file
from modaverse.cli import main as modaverse_cli
from modaverse.local import LocalService, service_executable
from modaverse_runtime import samples

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


def write_samples() -> list[Path]:
    SAMPLES.mkdir(exist_ok=True)
    files = {
        "red_circle.png": samples.make_image("circle", "red"),
        "red_circle_2.jpg": samples.make_image("circle", "red", fmt="JPEG", seed=7),
        "blue_square.png": samples.make_image("square", "blue"),
        "tone_440hz.wav": samples.make_audio(440.0, 2.0, 44100, channels=2),
        "tone_880hz.flac": samples.make_audio(880.0, 2.0, 16000, fmt="FLAC"),
        "moving_circle.mp4": samples.make_video("circle", "red", seconds=2.0),
    }
    for name, data in files.items():
        (SAMPLES / name).write_bytes(data)
    return [SAMPLES / name for name in files]


def main() -> int:
    paths = write_samples()
    print(f"sample media written to {SAMPLES}/")
    started = time.perf_counter()
    with LocalService(service_executable("modaverse-encoder")) as encoder:
        print(f"encoder SERVING on {encoder.target} after {time.perf_counter() - started:.1f}s (tiny profile)")
        with EncoderClient(encoder.target) as client:
            assert len(client.encode([media_from_file(paths[0])])) == 1
        try:
            modaverse_cli(["encode", "--target", encoder.target, *map(str, paths)])
        except SystemExit as done:
            if done.code:
                return int(done.code)
    print("encoder stopped cleanly (SIGTERM → drain → unload)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

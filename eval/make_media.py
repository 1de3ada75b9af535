"""The media files the starter benchmark (eval/starter.jsonl) names, made locally into eval/media/.

Shapes on a light background (PNG), short sounds (16 kHz mono WAV, 1 s) and shapes sliding across a small
frame (H.264 MP4): each file is a few KB, made from its arguments alone (the same bytes on every run with the
same ffmpeg build), so nothing is downloaded and nothing large needs committing.

    python eval/make_media.py              # writes eval/media/*
    python eval/make_media.py --out DIR    # elsewhere (the benchmark expects media/ beside starter.jsonl)
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from modaverse_runtime import samples

HERE = Path(__file__).resolve().parent
RATE = 16000


def _wav(signal: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.clip(signal, -1.0, 1.0).astype(np.float32), RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _time(seconds: float = 1.0) -> np.ndarray:
    return np.arange(round(seconds * RATE)) / RATE


def tone(freq_hz: float) -> bytes:
    return _wav(0.5 * np.sin(2 * math.pi * freq_hz * _time()))


def beeps(freq_hz: float, per_second: int) -> bytes:
    t = _time()
    gate = (np.floor(t * per_second * 2) % 2 == 0).astype(np.float64)  # on half of each period
    return _wav(0.5 * gate * np.sin(2 * math.pi * freq_hz * t))


def chord(*freqs: float) -> bytes:
    t = _time()
    return _wav(np.sum([0.25 * np.sin(2 * math.pi * f * t) for f in freqs], axis=0))


def rain(seed: int) -> bytes:
    """Soft noise with random clicks (drops), seeded."""
    rng = np.random.default_rng(seed)
    n = len(_time())
    noise = np.convolve(rng.normal(0, 0.15, n), np.ones(8) / 8, mode="same")
    drops = np.zeros(n)
    drops[rng.integers(0, n, 60)] = rng.uniform(0.3, 0.8, 60)
    return _wav(noise + np.convolve(drops, np.exp(-np.arange(200) / 30.0), mode="same"))


def sweep(low_hz: float, high_hz: float) -> bytes:
    t = _time()
    freq = low_hz + (high_hz - low_hz) * t  # rising over the second
    return _wav(0.5 * np.sin(2 * math.pi * np.cumsum(freq) / RATE))


def image(shape: str, colour: str) -> Callable[[], bytes]:
    return lambda: samples.make_image(shape, colour, size=160, seed=1)


def video(shape: str, colour: str) -> Callable[[], bytes]:
    return lambda: samples.make_video(shape, colour, seconds=2.0, fps=8, size=96)


# File name (under media/) -> how to make it.
MEDIA: dict[str, Callable[[], bytes]] = {
    "red_circle.png": image("circle", "red"),
    "blue_square.png": image("square", "blue"),
    "green_triangle.png": image("triangle", "green"),
    "yellow_star.png": image("star", "yellow"),
    "purple_cross.png": image("cross", "purple"),
    "orange_circle.png": image("circle", "orange"),
    "low_hum.wav": lambda: tone(110.0),
    "high_beep.wav": lambda: tone(1760.0),
    "fast_beeps.wav": lambda: beeps(880.0, 4),
    "rain.wav": lambda: rain(5),
    "major_chord.wav": lambda: chord(261.6, 329.6, 392.0),
    "rising_sweep.wav": lambda: sweep(200.0, 1200.0),
    "red_circle_sliding.mp4": video("circle", "red"),
    "blue_square_sliding.mp4": video("square", "blue"),
    "green_star_sliding.mp4": video("star", "green"),
}


def make(out: Path, names: list[str] | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or list(MEDIA):
        path = out / name
        path.write_bytes(MEDIA[name]())
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "media", help="folder (default: eval/media)")
    args = parser.parse_args(argv)
    paths = make(args.out)
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} files ({total / 1024:.0f} KB) into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

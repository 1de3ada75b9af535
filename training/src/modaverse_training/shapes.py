"""The shapes world: a synthetic captioned-media set small enough to train the tiny profile on CPU.

Images: one of 5 shapes in one of 6 colours at a random position and size ("a red circle").
Audio: one of 5 sound types with random pitch/timing ("a high beep"). Video: a shape of a colour
moving across the frame ("a blue star moving"). Everything is rendered deterministically from the
seed and written as real files plus caption files, so training runs through the same path as real
captioned data (caption files → instruction JSONL → encoder features → trainer).
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageColor, ImageDraw

from modaverse_runtime.samples import SHAPES, draw_shape, make_video

COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
SOUNDS = ("a low hum", "a high beep", "a rising chirp", "white noise", "a ticking clock")
IMAGE_SIZE = 224
AUDIO_RATE = 16000


@dataclass(frozen=True)
class WorldCounts:
    images: int = 2000
    audio: int = 500
    video: int = 150


def render_image(shape: str, color: str, rng: random.Random, size: int = IMAGE_SIZE) -> Image.Image:
    background = tuple(235 - rng.randrange(0, 30) for _ in range(3))
    img = Image.new("RGB", (size, size), background)
    radius = size * rng.uniform(0.14, 0.32)
    centre = (rng.uniform(radius, size - radius), rng.uniform(radius, size - radius))
    draw_shape(ImageDraw.Draw(img), shape, centre, radius, ImageColor.getrgb(color))
    return img


def render_sound(kind: str, rng: random.Random, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
    amp = rng.uniform(0.3, 0.6)
    if kind == "a low hum":
        wave = np.sin(2 * math.pi * rng.uniform(80, 180) * t)
    elif kind == "a high beep":
        wave = np.sin(2 * math.pi * rng.uniform(1800, 3000) * t) * (np.sin(2 * math.pi * 2 * t) > 0)
    elif kind == "a rising chirp":
        f0, f1 = rng.uniform(200, 400), rng.uniform(2000, 4000)
        wave = np.sin(2 * math.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))
    elif kind == "white noise":
        wave = np.random.default_rng(rng.randrange(2**31)).uniform(-1, 1, t.size)
    else:  # a ticking clock: short clicks twice a second
        wave = np.zeros_like(t)
        for start in np.arange(rng.uniform(0, 0.2), seconds, 0.5):
            i = int(start * AUDIO_RATE)
            wave[i : i + 160] = np.random.default_rng(i).uniform(-1, 1, min(160, wave.size - i))
    return (amp * wave).astype(np.float32)


def _write_captions(path: Path, rows: list[tuple[str, str]]) -> None:
    path.write_text("".join(f"{media}\t{caption}\n" for media, caption in rows), encoding="utf-8")


def generate_world(
    root: Path, counts: WorldCounts = WorldCounts(), seed: int = 0, on_file: Callable[[], None] | None = None
) -> dict[str, Path]:
    """Render the world into ``root``; returns the caption file per kind. ``on_file`` is called after each
    media file is written (progress; it does not change what is rendered)."""
    tick = on_file or (lambda: None)
    rng = random.Random(seed)
    files: dict[str, Path] = {}
    rows: list[tuple[str, str]] = []
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(counts.images):
        shape, color = SHAPES[i % len(SHAPES)], COLORS[(i // len(SHAPES)) % len(COLORS)]
        name = f"images/img_{i:05d}.png"
        render_image(shape, color, rng).save(root / name, optimize=False, compress_level=1)
        rows.append((name, f"a {color} {shape}"))
        tick()
    files["image"] = root / "images.tsv"
    _write_captions(files["image"], rows)

    rows = []
    (root / "audio").mkdir(exist_ok=True)
    for i in range(counts.audio):
        kind = SOUNDS[i % len(SOUNDS)]
        name = f"audio/aud_{i:05d}.wav"
        buf = io.BytesIO()
        sf.write(buf, render_sound(kind, rng), AUDIO_RATE, format="WAV", subtype="PCM_16")
        (root / name).write_bytes(buf.getvalue())
        rows.append((name, kind))
        tick()
    files["audio"] = root / "audio.tsv"
    _write_captions(files["audio"], rows)

    rows = []
    (root / "video").mkdir(exist_ok=True)
    for i in range(counts.video):
        shape, color = SHAPES[i % len(SHAPES)], COLORS[(i // len(SHAPES)) % len(COLORS)]
        name = f"video/vid_{i:05d}.mp4"
        (root / name).write_bytes(make_video(shape, color, seconds=2.0, fps=8, size=96))
        rows.append((name, f"a {color} {shape} moving"))
        tick()
    files["video"] = root / "video.tsv"
    _write_captions(files["video"], rows)
    return files

"""How much decoding one media item may cost."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MediaLimits:
    max_bytes: int = 64 * 2**20
    max_image_pixels: int = 40_000_000
    max_audio_seconds: float = 600.0
    max_video_seconds: float = 600.0
    # Decoded samples (frames x channels): bounds memory even for a tiny, highly compressed
    # file of many channels at a high rate. Default: 10 min of 48 kHz stereo (~230 MB float32).
    max_audio_samples: int = 600 * 48_000 * 2

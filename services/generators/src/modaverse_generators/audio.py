"""text-to-audio: AudioLDM (and AudioLDM 2, whose call takes the same arguments) → 16 kHz audio."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modaverse_runtime.media import MediaKind

from .base import GeneratedMedia, GenerationParams, Limits
from .diffusers_generator import DiffusersGenerator
from .encoding import AUDIO_MIME_TYPES, encode_audio
from .params import KindSpec, OptionSpec


class TextToAudio(DiffusersGenerator):
    kind = "text-to-audio"
    release_model = "cvssp/audioldm-l-full"
    spec = KindSpec(
        modality=MediaKind.AUDIO,
        mime_types=AUDIO_MIME_TYPES,
        options={"eta": OptionSpec(0.0, 1.0)},
        uses_duration=True,
    )
    # Release: 10 steps, 5 s; AudioLDM's default guidance 2.5.
    full_limits = Limits(
        default_steps=10,
        max_steps=200,
        default_guidance_scale=2.5,
        max_prompt_chars=0,
        default_duration_s=5.0,
        max_duration_s=30.0,
    )
    tiny_limits = Limits(
        default_steps=4,
        max_steps=500,
        default_guidance_scale=2.5,
        max_prompt_chars=0,
        default_duration_s=1.0,
        max_duration_s=10.0,
    )
    call_params = frozenset({"audio_length_in_s"})

    @property
    def sample_rate(self) -> int:
        return int(self.pipe.vocoder.config.sampling_rate)

    def call_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        return {"audio_length_in_s": params.duration_s, "num_waveforms_per_prompt": 1}

    def rows(self, output: Any) -> Sequence[Any]:
        return list(np.asarray(output.audios))  # (B, samples)

    def encode(self, row: Any, params: GenerationParams) -> GeneratedMedia:
        samples = np.asarray(row, dtype=np.float32).reshape(-1)
        data = encode_audio(samples, self.sample_rate, params.mime_type)
        return GeneratedMedia(params.mime_type, data, params.seed, 0.0, 0.0, duration_s=len(samples) / self.sample_rate)

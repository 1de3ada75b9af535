"""text-to-audio: AudioLDM (and AudioLDM 2, whose call takes the same arguments) → 16 kHz audio."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modaverse_runtime.media import MediaKind

from .base import GeneratedMedia, GenerationParams
from .diffusers_generator import DiffusersGenerator
from .encoding import AUDIO_MIME_TYPES, encode_audio
from .params import Bounds, KindSpec, ParamSpec, guidance_scale, option, steps


class TextToAudio(DiffusersGenerator):
    kind = "text-to-audio"
    release_model = "cvssp/audioldm-l-full"
    # Release: 10 steps, 5 s; AudioLDM's default guidance 2.5.
    spec = KindSpec(
        modality=MediaKind.AUDIO,
        mime_types=AUDIO_MIME_TYPES,
        params=(
            steps(full=Bounds(10, 200), tiny=Bounds(4, 500)),
            guidance_scale(2.5),
            ParamSpec(
                "duration_seconds",
                0.0,
                30.0,
                5.0,
                exclusive_minimum=True,
                call_arg="audio_length_in_s",
                tiny=Bounds(1.0, 10.0),
            ),
            option("eta", 0.0, 1.0),
        ),
    )

    @property
    def sample_rate(self) -> int:
        return int(self.pipe.vocoder.config.sampling_rate)

    def call_kwargs(self, batch: Sequence[GenerationParams]) -> dict[str, Any]:
        return {"num_waveforms_per_prompt": 1}

    def rows(self, output: Any) -> Sequence[Any]:
        return list(np.asarray(output.audios))  # (B, samples)

    def encode(self, row: Any, params: GenerationParams) -> GeneratedMedia:
        samples = np.asarray(row, dtype=np.float32).reshape(-1)
        data = encode_audio(samples, self.sample_rate, params.mime_type)
        return GeneratedMedia(params.mime_type, data, params.seed, 0.0, 0.0, duration_s=len(samples) / self.sample_rate)

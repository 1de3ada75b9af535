"""Our transforms against the libraries ImageBind's own data module uses.

torchaudio and torchvision do not load beside our CPU torch, so these run only on the
GPU image, where both are installed (nothing here needs the GPU itself).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

torchaudio = pytest.importorskip(
    "torchaudio", reason="torchaudio reference only on the GPU image; run with `make test-gpu`"
)

from modaverse_encoder.transforms import (  # noqa: E402  (after the importorskip)
    CLIP_MEAN,
    CLIP_STD,
    audio_to_clips,
    image_to_tensor,
    kaldi_fbank,
    short_side_scale,
)


def _reference_fbank(waveform: torch.Tensor, rate: int, num_mel_bins: int = 128) -> torch.Tensor:
    # The exact call in imagebind/data.py waveform2melspec.
    out: torch.Tensor = torchaudio.compliance.kaldi.fbank(
        waveform[None],
        htk_compat=True,
        sample_frequency=rate,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=num_mel_bins,
        dither=0.0,
        frame_length=25,
        frame_shift=10,
    )
    return out


def _signals() -> dict[str, torch.Tensor]:
    t = torch.arange(32000, dtype=torch.float64) / 16000
    gen = torch.Generator().manual_seed(0)
    return {
        "noise": (torch.rand(32000, generator=gen) - 0.5).float(),
        "tone": (0.5 * torch.sin(2 * math.pi * 1000 * t)).float(),
        "chirp": (0.3 * torch.sin(2 * math.pi * (200 + 1500 * t) * t)).float(),
    }


@pytest.mark.parametrize("name", ["noise", "tone", "chirp"])
def test_fbank_matches_torchaudio(name: str) -> None:
    waveform = _signals()[name]
    ours = kaldi_fbank(waveform, 16000)
    ref = _reference_fbank(waveform, 16000)
    assert ours.shape == ref.shape
    assert float((ours - ref).abs().max()) < 1e-3


def test_fbank_matches_torchaudio_at_other_rates_and_bins() -> None:
    waveform = _signals()["noise"][:12000]
    for rate, bins in [(8000, 40), (22050, 64), (48000, 128)]:
        ours, ref = kaldi_fbank(waveform, rate, bins), _reference_fbank(waveform, rate, bins)
        assert ours.shape == ref.shape
        assert float((ours - ref).abs().max()) < 1e-3, (rate, bins)


def _release_audio_clips(waveform: torch.Tensor, rate: int, clips: int = 3) -> torch.Tensor:
    """load_and_transform_audio_data for a 16 kHz mono waveform (no file, no resample)."""
    waveform = waveform.clone()  # the release centres clips in place, on views of this
    duration = waveform.size(1) / rate
    # ConstantClipsPerVideoSampler(clip_duration=2, clips_per_video=clips), walked as get_clip_timepoints does
    max_start = Fraction(max(duration - 2, 0))
    step = Fraction(max_start, max(clips - 1, 1))
    out = []
    for i in range(clips):
        start, end = step * i, step * i + 2
        clip = waveform[:, int(start * rate) : int(end * rate)]
        clip -= clip.mean()  # in place on a view: carries into overlapping later clips
        fbank = _reference_fbank(clip[0], rate).transpose(0, 1)
        p = 204 - fbank.size(1)
        fbank = torch.nn.functional.pad(fbank, (0, p)) if p > 0 else fbank[:, :204]
        out.append((fbank.unsqueeze(0) - -4.268) / 9.138)
    return torch.stack(out)


@pytest.mark.parametrize("seconds", [1.0, 2.0, 5.3, 12.0])
def test_audio_clips_match_the_release_pipeline_at_16k_mono(seconds: float) -> None:
    n = int(seconds * 16000)
    gen = torch.Generator().manual_seed(1)
    waveform = (torch.rand(1, n, generator=gen) - 0.5) * 0.8
    ours = audio_to_clips(waveform.numpy(), 16000)
    ref = _release_audio_clips(waveform, 16000)
    assert ours.shape == ref.shape == (3, 1, 128, 204)
    assert float((ours - ref).abs().max()) < 1e-5


@pytest.mark.parametrize("rate", [44100, 48000, 22050])
def test_resampled_clips_stay_close_to_torchaudio_resampling(rate: int) -> None:
    # Documented deviation: scipy's polyphase resampler instead of torchaudio's windowed
    # sinc. The filters differ near the band edge and in their stop-band leakage, which
    # moves individual near-silent log-mel cells (up to ~0.2 normalised); on average the
    # clips agree to ~2.5e-3 (measured on the GPU image).
    t = torch.arange(3 * rate, dtype=torch.float64) / rate
    gen = torch.Generator().manual_seed(3)
    tones = 0.3 * torch.sin(2 * math.pi * 440 * t) + 0.1 * torch.sin(2 * math.pi * 3000 * t)
    waveform = (tones + 0.2 * (torch.rand(3 * rate, generator=gen, dtype=torch.float64) - 0.5)).float()[None]
    ours = audio_to_clips(waveform.numpy(), rate)
    ref = _release_audio_clips(torchaudio.functional.resample(waveform, rate, 16000), 16000)
    assert ours.shape == ref.shape
    assert float((ours - ref).abs().mean()) < 0.01


def _torchvision_image(img: Image.Image) -> torch.Tensor:
    transforms = pytest.importorskip("torchvision.transforms")
    pipeline = transforms.Compose(
        [
            transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=CLIP_MEAN, std=CLIP_STD),
        ]
    )
    out: torch.Tensor = pipeline(img)
    return out


@pytest.mark.parametrize("size", [(320, 240), (240, 320), (449, 224), (224, 224), (100, 57), (1000, 999)])
def test_image_to_tensor_matches_torchvision(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(size[0] * size[1])
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(pixels)
    ours, ref = image_to_tensor(img), _torchvision_image(img)
    assert ours.shape == ref.shape == (3, 224, 224)
    assert float((ours - ref).abs().max()) < 2e-2


def test_short_side_scale_matches_torchvision_bilinear_resize() -> None:
    functional = pytest.importorskip("torchvision.transforms.functional")
    gen = torch.Generator().manual_seed(2)
    for h, w in [(240, 320), (320, 240), (64, 96), (300, 300)]:
        x = torch.rand(3, 2, h, w, generator=gen)
        ours = short_side_scale(x, 224)
        ref = functional.resize(x, 224, interpolation=functional.InterpolationMode.BILINEAR, antialias=False)
        assert ours.shape == ref.shape
        assert float((ours - ref).abs().max()) < 1e-5

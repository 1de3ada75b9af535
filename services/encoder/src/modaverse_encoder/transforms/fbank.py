"""Kaldi log-mel filterbank features in plain torch.

Numerically follows ``torchaudio.compliance.kaldi.fbank`` (itself Kaldi's
``compute-fbank-feats``) with the options ImageBind uses: ``htk_compat=True``,
``use_energy=False``, ``window_type="hanning"``, ``dither=0.0``, and the defaults
``snip_edges=True``, ``remove_dc_offset=True``, ``preemphasis_coefficient=0.97``,
``round_to_power_of_two=True``, ``low_freq=20``, ``high_freq=0`` (Nyquist),
``use_log_fbank=True``, ``use_power=True``, no VTLN. Computations stay in float32,
as torchaudio's do, so results agree to float rounding.
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["kaldi_fbank", "mel_banks", "mel_scale"]

_PREEMPHASIS = 0.97
_LOW_FREQ = 20.0
# Kaldi floors mel energies at numeric_limits<float>::epsilon() before the log.
_EPSILON = torch.finfo(torch.float32).eps


def mel_scale(freq: float) -> float:
    """Kaldi's mel scale: 1127 · ln(1 + f / 700)."""
    return 1127.0 * math.log(1.0 + freq / 700.0)


def kaldi_fbank(
    waveform: torch.Tensor,
    sample_rate: int,
    num_mel_bins: int = 128,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
) -> torch.Tensor:
    """float32 (frames, num_mel_bins) log-mel energies of a 1-D waveform.

    ``frames = 1 + (n - window) // shift`` (snip_edges). A waveform shorter than one
    window gives zero frames (torchaudio asserts instead).
    """
    if waveform.dim() != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {tuple(waveform.shape)}")
    x = waveform.to(torch.float32)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    window = int(sample_rate * frame_length_ms * 0.001)
    if shift <= 0 or window < 2:
        raise ValueError(f"frame length {frame_length_ms} ms / shift {frame_shift_ms} ms too short at {sample_rate} Hz")
    padded = 1 << (window - 1).bit_length()  # round_to_power_of_two
    if x.numel() < window:
        return torch.empty((0, num_mel_bins), dtype=torch.float32, device=x.device)
    frames = x.unfold(0, window, shift)  # (m, window), rows start at k * shift
    frames = frames - frames.mean(dim=1, keepdim=True)  # remove_dc_offset
    # Pre-emphasis x[j] -= 0.97 * x[j - 1], with x[-1] taken as x[0] (Kaldi's edge rule).
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - _PREEMPHASIS * previous
    frames = frames * torch.hann_window(window, periodic=False, dtype=torch.float32, device=x.device)
    frames = torch.nn.functional.pad(frames, (0, padded - window))
    power = torch.fft.rfft(frames).abs().pow(2.0)  # (m, padded // 2 + 1)
    banks = mel_banks(num_mel_bins, padded, float(sample_rate)).to(x.device)
    energies = torch.mm(power, banks.T)
    return torch.clamp(energies, min=_EPSILON).log()


@functools.lru_cache(maxsize=16)
def mel_banks(num_mel_bins: int, padded_window: int, sample_rate: float) -> torch.Tensor:
    """float32 (num_mel_bins, padded_window // 2 + 1) triangular filters, equally spaced in mel.

    Filter k rises from mel ``low + k·Δ`` to a peak at ``low + (k+1)·Δ`` and falls to
    ``low + (k+2)·Δ``, with Δ = (mel(high) − mel(low)) / (num_mel_bins + 1); each FFT
    bin i sits at mel(i · sr / padded_window). The Nyquist bin has no weight, as in Kaldi.
    Returned tensors are shared: do not modify them in place.
    """
    if num_mel_bins <= 3:
        raise ValueError("Kaldi needs more than 3 mel bins")
    nyquist = 0.5 * sample_rate
    low, high = _LOW_FREQ, nyquist  # high_freq=0 means "at Nyquist"
    mel_low, mel_high = mel_scale(low), mel_scale(high)
    delta = (mel_high - mel_low) / (num_mel_bins + 1)
    k = torch.arange(num_mel_bins, dtype=torch.float32).unsqueeze(1)
    left = mel_low + k * delta
    centre = mel_low + (k + 1.0) * delta
    right = mel_low + (k + 2.0) * delta
    bin_hz = sample_rate / padded_window * torch.arange(padded_window // 2, dtype=torch.float32)
    mel = (1127.0 * (1.0 + bin_hz / 700.0).log()).unsqueeze(0)
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.nn.functional.pad(banks, (0, 1))

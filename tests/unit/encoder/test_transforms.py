"""ImageBind input transforms: shapes, reference semantics and hand-computed values."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from modaverse_encoder.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    audio_to_clips,
    clip_frame_indices,
    clip_timepoints,
    clip_timepoints_exact,
    image_to_tensor,
    kaldi_fbank,
    resample,
    short_side_scale,
    video_to_clips,
)
from modaverse_runtime.media import MediaLimits, decode_audio, decode_video
from modaverse_runtime.samples import make_audio, make_video

AUDIO_MEAN, AUDIO_STD = -4.268, 9.138
EPS = float(np.finfo(np.float32).eps)
LOG_EPS = math.log(EPS)


def _tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(round(seconds * rate)) / rate)).astype(np.float32)


def _mel(f: float) -> float:
    return 1127.0 * math.log(1.0 + f / 700.0)


def _mel_centres_hz(num_bins: int, rate: int) -> np.ndarray:
    lo, hi = _mel(20.0), _mel(rate / 2)
    delta = (hi - lo) / (num_bins + 1)
    return np.array([700.0 * (math.exp((lo + (k + 1) * delta) / 1127.0) - 1.0) for k in range(num_bins)])


# ------------------------------------------------------------------------------ clips


@pytest.mark.parametrize(
    ("duration", "clips", "expected"),
    [
        (10.0, 3, [(0.0, 2.0), (4.0, 6.0), (8.0, 10.0)]),  # long: spread evenly
        (6.0, 5, [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0), (3.0, 5.0), (4.0, 6.0)]),
        (1.5, 3, [(0.0, 2.0)] * 3),  # short: all at 0, ends past the input
        (2.0, 3, [(0.0, 2.0)] * 3),  # exactly one clip long
        (10.0, 1, [(0.0, 2.0)]),
    ],
)
def test_clip_timepoints(duration: float, clips: int, expected: list[tuple[float, float]]) -> None:
    assert clip_timepoints(duration, 2.0, clips) == expected


def test_clip_timepoints_are_exact_fractions_of_the_float_span() -> None:
    exact = clip_timepoints_exact(7.3, 2, 3)
    span = Fraction(7.3 - 2)  # the sampler converts the float difference exactly
    assert exact == [(Fraction(0), Fraction(2)), (span / 2, span / 2 + 2), (span, span + 2)]
    assert clip_timepoints(7.3, 2, 3)[2] == pytest.approx((5.3, 7.3))


def test_clip_timepoints_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="clips_per_item"):
        clip_timepoints(5.0, 2.0, 0)


# ------------------------------------------------------------------------------ image


def _expected_normalised(rgb: tuple[int, int, int]) -> list[float]:
    return [(c / 255.0 - m) / s for c, m, s in zip(rgb, CLIP_MEAN, CLIP_STD, strict=True)]


def test_image_solid_colour_normalises_to_hand_computed_values() -> None:
    rgb = (200, 100, 50)
    out = image_to_tensor(Image.new("RGB", (320, 240), rgb))
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    expected = _expected_normalised(rgb)
    # (200/255 - 0.48145466) / 0.26862954 = 1.12743...
    assert expected[0] == pytest.approx(1.127426, abs=1e-5)
    for channel, value in enumerate(expected):
        torch.testing.assert_close(out[channel], torch.full((224, 224), value), atol=1e-5, rtol=0)


def test_image_non_rgb_modes_are_converted() -> None:
    out = image_to_tensor(Image.new("L", (50, 80), 255), size=32)
    assert out.shape == (3, 32, 32)
    torch.testing.assert_close(out[:, 0, 0], torch.tensor(_expected_normalised((255, 255, 255))))


def _column_coded(width: int, height: int) -> Image.Image:
    cols = np.arange(width)
    row = np.stack([cols % 256, cols // 256, np.zeros_like(cols)], axis=1).astype(np.uint8)
    return Image.fromarray(np.repeat(row[None], height, axis=0))


def _decode_column(t: torch.Tensor, x: int) -> int:
    red, green = [round((float(t[c, 0, x]) * CLIP_STD[c] + CLIP_MEAN[c]) * 255) for c in range(2)]
    return red + 256 * green


def test_image_centre_crop_offset_uses_pythons_round() -> None:
    # 449 wide, 224 high: no resize; (449 - 224) / 2 = 112.5 rounds (half to even) to 112.
    out = image_to_tensor(_column_coded(449, 224))
    assert _decode_column(out, 0) == 112
    assert _decode_column(out, 223) == 335


@pytest.mark.parametrize(
    ("size", "expected"), [((300, 200), (336, 224)), ((200, 300), (224, 336)), ((225, 224), (225, 224))]
)
def test_image_resize_keeps_aspect_with_truncated_long_side(size: tuple[int, int], expected: tuple[int, int]) -> None:
    from modaverse_encoder.transforms.image import _resized_size

    assert _resized_size(*size, 224) == expected


# ------------------------------------------------------------------------------ fbank


def numpy_fbank(x: np.ndarray, rate: int, num_bins: int = 128) -> np.ndarray:
    """Kaldi fbank written out from its documented steps, frame by frame, in float64."""
    x = np.asarray(x, dtype=np.float64)
    shift, window = rate * 10 // 1000, rate * 25 // 1000
    nfft = 1
    while nfft < window:
        nfft *= 2
    hann = np.array([0.5 - 0.5 * math.cos(2 * math.pi * i / (window - 1)) for i in range(window)])
    lo, hi = _mel(20.0), _mel(rate / 2)
    delta = (hi - lo) / (num_bins + 1)
    weights = np.zeros((num_bins, nfft // 2 + 1))
    for k in range(num_bins):
        left, centre, right = lo + k * delta, lo + (k + 1) * delta, lo + (k + 2) * delta
        for i in range(nfft // 2):  # the Nyquist bin is never used
            m = _mel(i * rate / nfft)
            if left < m <= centre:
                weights[k, i] = (m - left) / (centre - left)
            elif centre < m < right:
                weights[k, i] = (right - m) / (right - centre)
    rows = []
    for t in range(1 + (len(x) - window) // shift):
        frame = x[t * shift : t * shift + window].copy()
        frame -= frame.mean()
        emphasised = np.empty(window)
        for j in range(window):
            emphasised[j] = frame[j] - 0.97 * frame[max(j - 1, 0)]
        padded = np.zeros(nfft)
        padded[:window] = emphasised * hann
        power = np.abs(np.fft.rfft(padded)) ** 2
        rows.append([math.log(max(float(weights[k] @ power), EPS)) for k in range(num_bins)])
    return np.array(rows)


@pytest.mark.parametrize("n", [400, 401, 559, 560, 16000, 32000])
def test_fbank_frame_count(n: int) -> None:
    out = kaldi_fbank(torch.zeros(n), 16000)
    assert out.shape == (1 + (n - 400) // 160, 128) and out.dtype == torch.float32


def test_fbank_shorter_than_a_window_has_no_frames() -> None:
    assert kaldi_fbank(torch.zeros(399), 16000).shape == (0, 128)


def _brown_noise(n: int, seed: int) -> np.ndarray:
    walk = np.cumsum(np.random.default_rng(seed).normal(size=n))
    walk -= walk.mean()
    return np.asarray(0.5 * walk / np.abs(walk).max(), dtype=np.float32)


def test_fbank_matches_numpy_reference_on_noise() -> None:
    # Brown noise is near-flat after Kaldi's pre-emphasis, so every mel bin holds real
    # energy and float32 (ours, like torchaudio's) agrees with float64 to 1e-4.
    noise = _brown_noise(8000, seed=0)
    ours = kaldi_fbank(torch.from_numpy(noise), 16000).numpy()
    np.testing.assert_allclose(ours, numpy_fbank(noise, 16000), atol=1e-4, rtol=0)


def test_fbank_matches_numpy_reference_on_white_noise() -> None:
    # Pre-emphasis leaves the lowest bins ~30 dB down on white noise; float32 rounding
    # there costs a few 1e-4 (torchaudio computes in float32 too).
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 8000).astype(np.float32)
    ours = kaldi_fbank(torch.from_numpy(noise), 16000).numpy()
    np.testing.assert_allclose(ours, numpy_fbank(noise, 16000), atol=1e-3, rtol=0)


def test_fbank_matches_numpy_reference_at_other_settings() -> None:
    noise = _brown_noise(4000, seed=1)
    ours = kaldi_fbank(torch.from_numpy(noise), 8000, num_mel_bins=40).numpy()
    np.testing.assert_allclose(ours, numpy_fbank(noise, 8000, 40), atol=1e-4, rtol=0)


def test_fbank_tone_peaks_in_the_nearest_mel_bin() -> None:
    out = kaldi_fbank(torch.from_numpy(_tone(1000.0, 1.0, 16000)), 16000)
    expected = int(np.argmin(np.abs(_mel_centres_hz(128, 16000) - 1000.0)))
    assert int(out.mean(dim=0).argmax()) == expected


def test_fbank_silence_is_the_log_energy_floor() -> None:
    out = kaldi_fbank(torch.zeros(4000), 16000)
    torch.testing.assert_close(out, torch.full_like(out, LOG_EPS))
    # a constant offset is removed per frame, so it is silence too
    torch.testing.assert_close(kaldi_fbank(torch.full((4000,), 0.25), 16000), out)


# ------------------------------------------------------------------------------ audio


def test_audio_clips_from_44k_stereo() -> None:
    decoded = decode_audio(make_audio(seconds=3.0, sample_rate=44100, channels=2), "", MediaLimits())
    out = audio_to_clips(decoded.samples, decoded.sample_rate)
    assert out.shape == (3, 1, 128, 204) and out.dtype == torch.float32


def test_audio_clip_padding_and_normalisation() -> None:
    out = audio_to_clips(_tone(440.0, 2.0, 16000)[None], 16000)
    # 32000 samples → 198 frames; frames 198..203 are zero padding, then normalised
    pad = (0.0 - AUDIO_MEAN) / AUDIO_STD
    torch.testing.assert_close(out[:, 0, :, 198:], torch.full((3, 128, 6), pad))
    assert not torch.isclose(out[:, 0, :, 197], torch.tensor(pad)).all()


def test_audio_channels_are_averaged() -> None:
    tone = _tone(440.0, 2.0, 16000)
    out = audio_to_clips(np.stack([tone, -tone]), 16000)  # cancels out to silence
    silent = (LOG_EPS - AUDIO_MEAN) / AUDIO_STD
    torch.testing.assert_close(out[:, 0, :, :198], torch.full((3, 128, 198), silent))


def test_audio_clips_sit_at_the_sampler_times() -> None:
    # 6 s, 3 clips of 2 s → clips start at 0, 2, 4 s: one tone each
    parts = [_tone(f, 2.0, 16000) for f in (500.0, 1500.0, 3000.0)]
    out = audio_to_clips(np.concatenate(parts), 16000)
    centres = _mel_centres_hz(128, 16000)
    for clip, freq in zip(out, (500.0, 1500.0, 3000.0), strict=True):
        peak = int(clip[0, :, :198].mean(dim=1).argmax())
        assert abs(centres[peak] - freq) < 60.0


def test_audio_input_is_not_modified() -> None:
    samples = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 5 * 16000)).astype(np.float32) + 0.1
    before = samples.copy()
    audio_to_clips(samples, 16000)  # overlapping clips, centred in place on a private copy
    np.testing.assert_array_equal(samples, before)


def test_short_audio_repeats_the_same_clip() -> None:
    out = audio_to_clips(_tone(440.0, 0.5, 16000), 16000)
    assert out.shape == (3, 1, 128, 204)
    torch.testing.assert_close(out[0], out[1])
    torch.testing.assert_close(out[0], out[2])


def test_resample_preserves_a_tone_frequency() -> None:
    x = _tone(1000.0, 1.0, 44100)
    y = resample(x, 44100, 16000)
    assert y.dtype == np.float32 and len(y) == math.ceil(44100 * 160 / 441)
    spectrum = np.abs(np.fft.rfft(y))
    assert np.fft.rfftfreq(len(y), 1 / 16000)[spectrum.argmax()] == pytest.approx(1000.0, abs=1.0)
    assert float(np.abs(y[1000:-1000]).max()) == pytest.approx(0.5, abs=0.01)


# ------------------------------------------------------------------------------ video


class FakeVideo:
    """A decoded-video stand-in whose frame i is ``frame(i)``; records frames_at calls."""

    def __init__(self, num_frames: int, fps: float, frame: Callable[[int], np.ndarray]) -> None:
        self.num_frames, self.fps, self.frame = num_frames, fps, frame
        self.duration = num_frames / fps
        self.calls: list[list[float]] = []

    def frames_at(self, times: Sequence[float]) -> np.ndarray:
        self.calls.append(list(times))
        return np.stack([self.frame(min(math.floor(t * self.fps + 1e-6), self.num_frames - 1)) for t in times])


def _index_frame(h: int, w: int) -> Callable[[int], np.ndarray]:
    return lambda i: np.full((h, w, 3), i, dtype=np.uint8)


def _frame_value(x: torch.Tensor) -> int:
    return round((float(x[0].mean()) * CLIP_STD[0] + CLIP_MEAN[0]) * 255)


def test_video_clip_frames_follow_decord_and_uniform_subsample() -> None:
    video = FakeVideo(100, 10.0, _index_frame(16, 16))
    out = video_to_clips(video, size=16)
    assert out.shape == (15, 3, 2, 16, 16) and out.dtype == torch.float32
    assert len(video.calls) == 1  # one sequential decode for all clips
    picked = [[_frame_value(out[c * 3][:, t]) for t in range(2)] for c in range(5)]
    assert picked == [[0, 19], [20, 39], [40, 59], [60, 79], [80, 99]]


def test_clip_frame_indices_with_fractional_times() -> None:
    clips = clip_frame_indices(5.0, 30.0, 150, 2.0, 5)  # starts 0, 0.75, 1.5, 2.25, 3
    assert clips[1][0] == 23 and clips[1][-1] == 82 and len(clips[1]) == 60  # ceil(22.5) .. ceil(82.5) - 1
    assert clips[4] == list(range(90, 150))
    short = clip_frame_indices(0.5, 10.0, 5, 2.0, 3)  # shorter than a clip: the frames that exist
    assert short == [[0, 1, 2, 3, 4]] * 3


def test_uniform_subsample_truncates_linspace_positions() -> None:
    video = FakeVideo(20, 10.0, _index_frame(8, 8))
    out = video_to_clips(video, size=8, clips_per_item=1, frames_per_clip=3, spatial_crops=1)
    # linspace(0, 19, 3) = [0, 9.5, 19] → .long() → [0, 9, 19]
    assert [_frame_value(out[0][:, t]) for t in range(3)] == [0, 9, 19]


def test_uniform_subsample_repeats_frames_when_too_few() -> None:
    video = FakeVideo(1, 10.0, _index_frame(8, 8))
    out = video_to_clips(video, size=8, clips_per_item=2, frames_per_clip=3, spatial_crops=1)
    assert out.shape == (2, 3, 3, 8, 8)
    assert [_frame_value(out[0][:, t]) for t in range(3)] == [0, 0, 0]


def _halves(h: int, w: int, vertical: bool) -> Callable[[int], np.ndarray]:
    def frame(i: int) -> np.ndarray:
        img = np.zeros((h, w, 3), dtype=np.uint8)
        if vertical:
            img[: h // 2, :, 0], img[h // 2 :, :, 2] = 255, 255
        else:
            img[:, : w // 2, 0], img[:, w // 2 :, 2] = 255, 255
        return img

    return frame


def _redness(x: torch.Tensor) -> float:
    red = x[0] * CLIP_STD[0] + CLIP_MEAN[0]
    return float(red.mean())


def test_spatial_crops_of_a_wide_video_are_left_centre_right() -> None:
    out = video_to_clips(FakeVideo(20, 10.0, _halves(32, 64, vertical=False)), size=32, clips_per_item=1)
    left, centre, right = out
    assert _redness(left) == pytest.approx(1.0)
    assert _redness(centre) == pytest.approx(0.5)
    assert _redness(right) == pytest.approx(0.0)


def test_spatial_crops_of_a_tall_video_are_top_centre_bottom() -> None:
    out = video_to_clips(FakeVideo(20, 10.0, _halves(64, 32, vertical=True)), size=32, clips_per_item=1)
    assert [_redness(c) for c in out] == [pytest.approx(1.0), pytest.approx(0.5), pytest.approx(0.0)]


def test_single_spatial_crop_is_the_centre_crop() -> None:
    video = FakeVideo(40, 10.0, _halves(32, 64, vertical=False))
    three = video_to_clips(video, size=32, clips_per_item=2)
    one = video_to_clips(video, size=32, clips_per_item=2, spatial_crops=1)
    assert one.shape == (2, 3, 2, 32, 32)
    torch.testing.assert_close(one, three[1::3])
    with pytest.raises(ValueError, match="spatial_crops"):
        video_to_clips(video, spatial_crops=2)


def test_short_side_scale_sizes() -> None:
    assert short_side_scale(torch.zeros(3, 2, 100, 150), 224).shape == (3, 2, 224, 336)
    assert short_side_scale(torch.zeros(3, 1, 150, 100), 224).shape == (3, 1, 336, 224)
    assert short_side_scale(torch.zeros(3, 1, 97, 100), 224).shape == (3, 1, 224, 230)  # floor(230.93)


def test_real_video_clips_move_between_clips() -> None:
    video = decode_video(make_video(seconds=4.0, fps=10, size=64, fmt="mp4"), "", MediaLimits())
    out = video_to_clips(video)
    assert out.shape == (15, 3, 2, 224, 224) and out.dtype == torch.float32
    centres = out[1::3]  # centre crop of each clip
    for a, b in itertools.pairwise(centres):
        assert not torch.allclose(a, b, atol=1e-2)  # clips start 0.5 s apart
    assert not torch.allclose(centres[0][:, 0], centres[0][:, 1], atol=1e-2)  # frames within a clip differ
    # values are CLIP-normalised pixels: the light background is near (240/255 - mean) / std
    assert float(out[1, 0].median()) == pytest.approx((240 / 255 - CLIP_MEAN[0]) / CLIP_STD[0], abs=0.1)

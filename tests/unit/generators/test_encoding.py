"""Encoders: every output type decodes with the runtime's own decoders, and bytes are reproducible."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from modaverse_generators.encoding import encode_audio, encode_image, encode_video, to_uint8
from modaverse_runtime.errors import FailedPrecondition
from modaverse_runtime.media import DecodedAudio, DecodedImage, DecodedVideo, MediaKind, MediaLimits, decode_media


def test_to_uint8_rounds_and_clips() -> None:
    out = to_uint8(np.array([-0.5, 0.0, 0.5 / 255, 1.4 / 255, 1.0, 2.0], dtype=np.float32))
    assert out.tolist() == [0, 0, 0, 1, 255, 255]  # round half to even, as numpy (and diffusers) do


@pytest.mark.parametrize("mime", ["image/png", "image/jpeg", "image/webp"])
def test_images(mime: str) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    data = encode_image(pixels, mime)
    assert data == encode_image(pixels, mime)
    decoded = decode_media(MediaKind.IMAGE, data, mime, MediaLimits())
    assert isinstance(decoded, DecodedImage) and decoded.image.size == (40, 24)
    if mime == "image/png":
        assert np.array_equal(np.asarray(decoded.image), pixels)  # lossless


@pytest.mark.parametrize("mime", ["video/mp4", "video/webm"])
def test_videos(mime: str) -> None:
    frames = np.zeros((5, 16, 24, 3), dtype=np.uint8)
    for i in range(5):
        frames[i, :, i * 4 : i * 4 + 8] = (200, 30, 30)
    data = encode_video(frames, 5, mime)
    assert data == encode_video(frames, 5, mime)
    decoded = decode_media(MediaKind.VIDEO, data, mime, MediaLimits())
    assert isinstance(decoded, DecodedVideo)
    assert (decoded.width, decoded.height, decoded.num_frames, decoded.fps) == (24, 16, 5, 5.0)
    assert decoded.duration == pytest.approx(1.0)
    if mime == "video/mp4":
        assert b"avc1" in data[:4096]  # H.264


def test_wav_keeps_float_samples_and_flac_clips() -> None:
    samples = np.sin(np.linspace(0, 200, 8000)).astype(np.float32) * 1e-3
    first = encode_audio(samples, 16000, "audio/wav")
    time.sleep(1.1)  # libsndfile would stamp the time into a float WAV's PEAK chunk
    assert encode_audio(samples, 16000, "audio/wav") == first
    assert encode_audio(samples, 16000, "audio/flac") == encode_audio(samples, 16000, "audio/flac")
    wav = decode_media(MediaKind.AUDIO, encode_audio(samples, 16000, "audio/wav"), "audio/wav", MediaLimits())
    assert isinstance(wav, DecodedAudio) and wav.sample_rate == 16000
    np.testing.assert_array_equal(wav.samples[0], samples)  # float32 WAV is exact, even for tiny values
    loud = np.array([2.0, -2.0, 0.5] * 100, dtype=np.float32)
    flac = decode_media(MediaKind.AUDIO, encode_audio(loud, 16000, "audio/flac"), "", MediaLimits())
    assert isinstance(flac, DecodedAudio) and flac.duration == pytest.approx(300 / 16000)
    assert np.abs(flac.samples).max() <= 1.0


def test_an_encoding_failure_says_what_ffmpeg_said_without_temp_paths() -> None:
    odd = np.zeros((2, 15, 24, 3), dtype=np.uint8)  # yuv420p needs an even height
    with pytest.raises(RuntimeError, match=r"^ffmpeg could not encode video/mp4 \(2 frames\): \S") as info:
        encode_video(odd, 5, "video/mp4")
    assert "modaverse-" not in str(info.value) and "/tmp" not in str(info.value)


def test_encoding_and_decoding_share_one_ffmpeg_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    mp4 = encode_video(np.zeros((2, 16, 16, 3), dtype=np.uint8), 5, "video/mp4")
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # the runner's binary lookup now fails
    with pytest.raises(FailedPrecondition, match="imageio-ffmpeg"):
        encode_video(np.zeros((2, 16, 16, 3), dtype=np.uint8), 5, "video/mp4")
    with pytest.raises(FailedPrecondition, match="imageio-ffmpeg"):
        decode_media(MediaKind.VIDEO, mp4, "video/mp4", MediaLimits())

"""Media decoding: every supported format decodes; every bad input is an InvalidArgument."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from modaverse_runtime.errors import InvalidArgument
from modaverse_runtime.media import (
    SUPPORTED_MIME_TYPES,
    DecodedAudio,
    DecodedImage,
    DecodedVideo,
    MediaKind,
    MediaLimits,
    decode_audio,
    decode_image,
    decode_media,
    decode_video,
    ffmpeg,
    sniff_mime,
)
from modaverse_runtime.samples import make_audio, make_image, make_video

LIMITS = MediaLimits()


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG header that claims a huge image (a decompression bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def mp4() -> bytes:
    return make_video(seconds=2.0, fps=10, size=64, fmt="mp4")


# ------------------------------------------------------------------------------ sniffing


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (make_image(fmt="PNG", size=16), "image/png"),
        (make_image(fmt="JPEG", size=16), "image/jpeg"),
        (make_image(fmt="WEBP", size=16), "image/webp"),
        (make_image(fmt="GIF", size=16), "image/gif"),
        (make_audio(seconds=0.1, fmt="WAV"), "audio/wav"),
        (make_audio(seconds=0.1, fmt="FLAC"), "audio/flac"),
        (make_audio(seconds=0.1, fmt="OGG"), "audio/ogg"),
        (make_audio(seconds=0.1, fmt="MP3"), "audio/mpeg"),
        (b"\x00\x01\x02\x03" * 8, None),
        (b"", None),
    ],
)
def test_sniff_mime(data: bytes, mime: str | None) -> None:
    assert sniff_mime(data) == mime


def test_sniff_video_containers(mp4: bytes) -> None:
    assert sniff_mime(mp4) == "video/mp4"
    assert sniff_mime(make_video(seconds=0.2, size=32, fmt="webm")) == "video/webm"


def test_supported_mime_types_cover_the_documented_aliases() -> None:
    assert {"image/jpeg", "image/png", "image/webp", "image/gif"} <= set(SUPPORTED_MIME_TYPES[MediaKind.IMAGE])
    assert {"audio/wav", "audio/x-wav", "audio/wave", "audio/flac", "audio/ogg", "audio/mpeg"} <= set(
        SUPPORTED_MIME_TYPES[MediaKind.AUDIO]
    )
    assert set(SUPPORTED_MIME_TYPES[MediaKind.VIDEO]) == {"video/mp4", "video/webm"}


# ------------------------------------------------------------------------------ images


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
@pytest.mark.parametrize("declared", [True, False])
def test_every_image_format_decodes(fmt: str, declared: bool) -> None:
    data = make_image("square", "red", size=96, fmt=fmt)
    mime = f"image/{fmt.lower()}" if declared else ""
    decoded = decode_image(data, mime, LIMITS)
    img = decoded.image
    assert (img.mode, img.size) == ("RGB", (96, 96))
    r, g, b = img.getpixel((48, 48))  # type: ignore[misc]
    assert r > 200 and g < 60 and b < 60  # the red square, through lossy codecs too


def test_mime_aliases_and_parameters_are_accepted() -> None:
    assert decode_image(make_image(fmt="JPEG", size=32), "image/jpg", LIMITS).image.size == (32, 32)
    assert decode_image(make_image(fmt="PNG", size=32), " Image/PNG; charset=binary", LIMITS).image.size == (32, 32)
    assert decode_audio(make_audio(seconds=0.2), "audio/x-wav", LIMITS).sample_rate == 16000


def test_alpha_is_composited_on_white() -> None:
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    img.putpixel((0, 0), (0, 0, 255, 255))
    out = decode_image(_png_bytes(img), "image/png", LIMITS).image
    assert out.getpixel((4, 4)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == (0, 0, 255)


def test_palette_transparency_and_greyscale_become_rgb() -> None:
    grey = decode_image(_png_bytes(Image.new("L", (4, 4), 100)), "", LIMITS).image
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (100, 100, 100)
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0])
    pal.info["transparency"] = 0
    assert decode_image(_png_bytes(pal), "", LIMITS).image.getpixel((1, 1)) == (255, 255, 255)


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    arr = np.full((4, 4), 32896, dtype=np.uint16)  # 128 * 257
    img = Image.fromarray(arr)
    assert decode_image(_png_bytes(img), "", LIMITS).image.getpixel((0, 0)) == (128, 128, 128)


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert decode_image(buf.getvalue(), "image/gif", LIMITS).image.getpixel((8, 8)) == (255, 0, 0)


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    assert decode_image(buf.getvalue(), "image/jpeg", LIMITS).image.size == (20, 40)


def _patch_claimed_size(data: bytes, fmt: str, width: int, height: int) -> bytes:
    raw = bytearray(data)
    if fmt == "JPEG":
        pos = 2
        while raw[pos + 1] not in (0xC0, 0xC1, 0xC2):
            pos += 2 + int.from_bytes(raw[pos + 2 : pos + 4], "big")
        raw[pos + 5 : pos + 9] = struct.pack(">HH", height, width)
    elif fmt == "GIF":
        raw[6:10] = struct.pack("<HH", width, height)
    elif fmt == "WEBP":
        assert raw[12:16] == b"VP8 "
        raw[26:30] = struct.pack("<HH", width, height)
    return bytes(raw)


@pytest.mark.parametrize("fmt", ["JPEG", "GIF", "WEBP"])
def test_pixel_bomb_headers_are_rejected_before_decoding(fmt: str) -> None:
    data = _patch_claimed_size(make_image(size=32, fmt=fmt), fmt, 16000, 16000)
    with pytest.raises(InvalidArgument, match=r"16000x16000 = 256000000 pixels, over the limit of 40000000"):
        decode_image(data, "", LIMITS)


def test_png_pixel_bomb_is_rejected() -> None:
    bomb = _png_claiming(30000, 30000)
    assert len(bomb) < 200
    with pytest.raises(InvalidArgument, match=r"30000x30000 = 900000000 pixels, over the limit of 40000000"):
        decode_image(bomb, "image/png", LIMITS)


def test_image_over_a_small_pixel_limit() -> None:
    with pytest.raises(InvalidArgument, match=r"64x64 = 4096 pixels, over the limit of 1000"):
        decode_image(make_image(size=64), "", MediaLimits(max_image_pixels=1000))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_image_is_rejected(fmt: str) -> None:
    data = make_image(size=128, fmt=fmt)
    with pytest.raises(InvalidArgument, match=r"corrupt or truncated"):
        decode_image(data[: len(data) // 2], "", LIMITS)


# ------------------------------------------------------------------------------ audio


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_every_audio_format_decodes(fmt: str, rate: int, channels: int) -> None:
    data = make_audio(freq_hz=440.0, seconds=0.5, sample_rate=rate, channels=channels, fmt=fmt)
    decoded = decode_audio(data, "", LIMITS)
    assert decoded.sample_rate == rate
    assert decoded.samples.dtype == np.float32
    assert decoded.samples.shape[0] == channels
    n = decoded.samples.shape[1]
    if fmt in ("WAV", "FLAC"):
        assert n == rate // 2
        assert abs(float(np.abs(decoded.samples).max()) - 0.5) < 1e-3
    else:  # lossy codecs: encoder delay and padding may move the length a little
        assert abs(n - rate // 2) <= 0.02 * rate
        assert 0.3 < float(np.abs(decoded.samples).max()) < 0.8
    assert float(np.abs(decoded.samples).max()) <= 1.0


def test_opus_in_ogg_decodes() -> None:
    buf = io.BytesIO()
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(24000) / 48000)
    sf.write(buf, tone, 48000, format="OGG", subtype="OPUS")
    decoded = decode_audio(buf.getvalue(), "audio/ogg; codecs=opus", LIMITS)
    assert decoded.sample_rate == 48000 and decoded.samples.shape[0] == 1
    assert abs(decoded.samples.shape[1] - 24000) <= 960


def test_audio_over_the_length_limit() -> None:
    data = make_audio(seconds=2.0)
    with pytest.raises(InvalidArgument, match=r"audio is 2\.0 seconds long, over the limit of 1 seconds"):
        decode_audio(data, "audio/wav", MediaLimits(max_audio_seconds=1.0))


def test_zero_length_audio_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match=r"no samples"):
        decode_audio(make_audio(seconds=0.0), "audio/wav", LIMITS)


def test_truncated_wav_is_rejected() -> None:
    data = make_audio(seconds=1.0)
    with pytest.raises(InvalidArgument, match=r"truncated: the data chunk declares 32000 bytes"):
        decode_audio(data[: len(data) // 2], "audio/wav", LIMITS)


def test_truncated_flac_is_rejected() -> None:
    data = make_audio(seconds=1.0, fmt="FLAC")
    with pytest.raises(InvalidArgument, match=r"audio/flac"):
        decode_audio(data[: len(data) // 2], "", LIMITS)


def test_too_many_channels_are_rejected() -> None:
    buf = io.BytesIO()
    sf.write(buf, np.zeros((100, 9), dtype=np.float32), 16000, format="WAV")
    with pytest.raises(InvalidArgument, match=r"9 channels"):
        decode_audio(buf.getvalue(), "", LIMITS)


# ------------------------------------------------------------------------------ video


@pytest.mark.parametrize("fmt", ["mp4", "webm", "webm-vp8"])
def test_every_video_format_decodes(fmt: str) -> None:
    data = make_video(seconds=1.0, fps=10, size=64, fmt=fmt, width=96)
    video = decode_video(data, "", LIMITS)
    assert (video.width, video.height, video.fps, video.num_frames) == (96, 64, 10.0, 10)
    assert video.duration == pytest.approx(1.0)
    frames = video.frames_at([0.0, 0.95])
    assert frames.shape == (2, 64, 96, 3) and frames.dtype == np.uint8


def _red_centroid_x(frame: np.ndarray) -> float:
    red = (frame[..., 0] > 150) & (frame[..., 1] < 100) & (frame[..., 2] < 100)
    return float(np.nonzero(red)[1].mean())


def test_frames_at_returns_the_frame_shown_at_each_time(mp4: bytes) -> None:
    video = decode_video(mp4, "video/mp4", LIMITS)
    times = [1.5, 0.0, 0.05, 0.0, 99.0]  # unordered, repeated, within a frame, past the end
    frames = video.frames_at(times)
    assert frames.shape == (5, 64, 64, 3)
    np.testing.assert_array_equal(frames[1], frames[3])
    np.testing.assert_array_equal(frames[1], frames[2])  # 0.05 s is still frame 0 at 10 fps
    last = video.frames_at([1.9])[0]
    np.testing.assert_array_equal(frames[4], last)  # past the end: the last frame
    # the shape moves right over time
    assert _red_centroid_x(frames[1]) < _red_centroid_x(frames[0]) < _red_centroid_x(last)
    assert video.frames_at([]).shape == (0, 64, 64, 3)


def test_video_decoding_is_deterministic(mp4: bytes) -> None:
    a = decode_video(mp4, "", LIMITS).frames_at([0.3, 1.2])
    b = decode_video(mp4, "", LIMITS).frames_at([0.3, 1.2])
    np.testing.assert_array_equal(a, b)


def test_video_over_the_length_limit(mp4: bytes) -> None:
    with pytest.raises(InvalidArgument, match=r"video is 2\.0 seconds long, over the limit of 1 seconds"):
        decode_video(mp4, "video/mp4", MediaLimits(max_video_seconds=1.0))


def test_video_frames_over_the_pixel_limit(mp4: bytes) -> None:
    with pytest.raises(InvalidArgument, match=r"64x64 = 4096 pixels"):
        decode_video(mp4, "", MediaLimits(max_image_pixels=1000))


def test_truncated_mp4_is_rejected_without_leaking_paths(mp4: bytes) -> None:
    with pytest.raises(InvalidArgument, match=r"^video could not be") as info:
        decode_video(mp4[: len(mp4) // 2], "video/mp4", LIMITS)
    assert "modaverse-" not in str(info.value) and "/tmp" not in str(info.value)


def test_mp4_without_a_video_stream_is_rejected(tmp_path: Path) -> None:
    out = tmp_path / "audio_only.mp4"
    silence = ["-v", "error", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "0.3", "-c:a", "aac"]
    ffmpeg.run([*silence, "-f", "mp4", str(out)], timeout_s=60)
    data = out.read_bytes()
    assert sniff_mime(data) == "video/mp4"
    with pytest.raises(InvalidArgument, match=r"^video "):
        decode_video(data, "", LIMITS)


def test_temp_files_are_removed(mp4: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    assert tempfile.gettempdir() == str(tmp_path)
    video = decode_video(mp4, "", LIMITS)
    video.frames_at([0.5])
    with pytest.raises(InvalidArgument):
        decode_video(mp4[:300], "", LIMITS)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ bad input, any kind


@pytest.mark.parametrize("kind", list(MediaKind))
def test_empty_data_is_rejected(kind: MediaKind) -> None:
    with pytest.raises(InvalidArgument, match=rf"^{kind.value} data is empty$"):
        decode_media(kind, b"", "", LIMITS)


@pytest.mark.parametrize("kind", list(MediaKind))
def test_data_over_max_bytes_is_rejected(kind: MediaKind) -> None:
    with pytest.raises(InvalidArgument, match=r"is 2000 bytes, over the limit of 1000 bytes"):
        decode_media(kind, b"\x00" * 2000, "", MediaLimits(max_bytes=1000))


@pytest.mark.parametrize("kind", list(MediaKind))
def test_random_bytes_are_rejected(kind: MediaKind) -> None:
    junk = b"\x00" + np.random.default_rng(0).bytes(4096)
    with pytest.raises(InvalidArgument, match=r"not in any recognised format"):
        decode_media(kind, junk, "", LIMITS)


def test_declared_mime_contradicting_the_content_names_both() -> None:
    wav = make_audio(seconds=0.1)
    with pytest.raises(InvalidArgument, match=r"image/png.*audio/wav"):
        decode_image(wav, "image/png", LIMITS)
    with pytest.raises(InvalidArgument, match=r"image/png.*image/jpeg"):
        decode_image(make_image(fmt="JPEG", size=16), "image/png", LIMITS)
    with pytest.raises(InvalidArgument, match=r"audio/flac.*audio/wav"):
        decode_audio(wav, "audio/flac", LIMITS)


def test_content_of_another_kind_is_rejected(mp4: bytes) -> None:
    with pytest.raises(InvalidArgument, match=r"expected image data, but the content looks like audio/wav"):
        decode_media(MediaKind.IMAGE, make_audio(seconds=0.1), "", LIMITS)
    with pytest.raises(InvalidArgument, match=r"expected audio data, but the content looks like video/mp4"):
        decode_media(MediaKind.AUDIO, mp4, "", LIMITS)
    with pytest.raises(InvalidArgument, match=r"expected video data, but the content looks like image/png"):
        decode_media(MediaKind.VIDEO, make_image(size=16), "", LIMITS)


def test_unsupported_mime_types_are_rejected() -> None:
    with pytest.raises(InvalidArgument, match=r"'image/bmp' is not supported for image inputs"):
        decode_image(make_image(size=16), "image/bmp", LIMITS)
    with pytest.raises(InvalidArgument, match=r"'video/mp4' is not supported for audio inputs"):
        decode_audio(make_audio(seconds=0.1), "video/mp4", LIMITS)


def test_unsupported_content_format_is_named() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="BMP")
    with pytest.raises(InvalidArgument, match=r"looks like image/bmp, which is not supported"):
        decode_image(buf.getvalue(), "", LIMITS)


def test_decode_media_dispatches_by_kind(mp4: bytes) -> None:
    assert isinstance(decode_media(MediaKind.IMAGE, make_image(size=16), "", LIMITS), DecodedImage)
    assert isinstance(decode_media(MediaKind.AUDIO, make_audio(seconds=0.1), "", LIMITS), DecodedAudio)
    assert isinstance(decode_media(MediaKind.VIDEO, mp4, "", LIMITS), DecodedVideo)


# ------------------------------------------------------------------------------ sample makers


@pytest.mark.parametrize("shape", ["circle", "square", "triangle", "star", "cross"])
def test_sample_shapes_differ_and_are_deterministic(shape: str) -> None:
    a = make_image(shape, "blue", size=64)
    assert a == make_image(shape, "blue", size=64)
    assert a != make_image(shape, "blue", size=64, seed=1)
    pixels = np.asarray(decode_image(a, "", LIMITS).image)
    blue = (pixels[..., 2] > 200) & (pixels[..., 0] < 60)
    assert 0.05 < blue.mean() < 0.6


def test_sample_makers_reject_unknown_options() -> None:
    with pytest.raises(ValueError, match="shape"):
        make_image("hexagon")
    with pytest.raises(ValueError, match="format"):
        make_audio(fmt="AAC")
    with pytest.raises(ValueError, match="format"):
        make_video(fmt="avi")


def test_audio_sample_budget_bounds_decoded_memory() -> None:
    data = make_audio(440.0, 1.0, 48000, channels=8, fmt="FLAC")
    with pytest.raises(InvalidArgument, match="samples"):
        decode_audio(data, "audio/flac", MediaLimits(max_audio_samples=48000 * 4))
    assert decode_audio(data, "audio/flac", MediaLimits(max_audio_samples=48000 * 8)).samples.shape == (8, 48000)

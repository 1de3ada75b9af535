"""The media package: its light names load no decoder library; the heavy ones load on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

import modaverse_runtime.media as media

DECODER_LIBRARIES = ("PIL", "soundfile", "numpy", "scipy", "torch", "imageio_ffmpeg")


def _modules_loaded_by(code: str) -> set[str]:
    """Top-level decoder libraries in sys.modules after running ``code`` in a fresh interpreter."""
    report = f"print(' '.join({{m.split('.')[0] for m in sys.modules}} & {set(DECODER_LIBRARIES)!r}))"
    probe = f"{code}\nimport sys\n{report}"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    return set(done.stdout.split())


def test_light_names_load_no_decoder_library() -> None:
    code = (
        "import modaverse_runtime.media as m\n"
        "from modaverse_runtime.media import SUPPORTED_MIME_TYPES, MediaKind, MediaLimits, canonical_mime, sniff_mime\n"
        "assert m.MediaKind.IMAGE in SUPPORTED_MIME_TYPES and MediaLimits().max_bytes > 0\n"
        "assert sniff_mime(b'fLaC') == canonical_mime('audio/x-flac') == 'audio/flac'\n"
    )
    assert _modules_loaded_by(code) == set()


def test_heavy_names_load_their_decoders_on_first_use() -> None:
    # The other half of the proof: the probe does see a decoder library once one is loaded.
    assert _modules_loaded_by("import modaverse_runtime.media as m\nm.decode_image") >= {"PIL", "numpy"}
    assert "soundfile" in _modules_loaded_by("from modaverse_runtime.media import decode_audio")


def test_every_public_name_resolves() -> None:
    for name in media.__all__:
        assert getattr(media, name) is not None, name
    assert set(media.__all__) <= set(dir(media))
    from modaverse_runtime.media.decode import decode_media
    from modaverse_runtime.media.video import DecodedVideo

    assert media.decode_media is decode_media and media.DecodedVideo is DecodedVideo


def test_unknown_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'decode_smell'"):
        media.decode_smell  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(ImportError):
        from modaverse_runtime.media import decode_smell  # type: ignore[attr-defined]  # noqa: F401

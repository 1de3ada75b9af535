"""What the magic bytes say a piece of media is (no decoder libraries needed)."""

from __future__ import annotations


def sniff_mime(data: bytes) -> str | None:
    """The MIME type the magic bytes say ``data`` is, or None if unrecognised.

    Also names a few common formats we do not accept (BMP, TIFF, M4A, MKV, AVI) so
    that rejections can say what the data actually is.
    """
    head = data[:64]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] in (b"RIFF", b"RF64") and len(head) >= 12:
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}.get(head[8:12])
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"ID3") or _is_mpeg_audio_frame(head):
        return "audio/mpeg"
    if head[4:8] == b"ftyp":
        return "audio/mp4" if head[8:11] in (b"M4A", b"M4B") else "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in head else "video/x-matroska"
    if head.startswith(b"BM"):
        return "image/bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    return None


def _is_mpeg_audio_frame(head: bytes) -> bool:
    # 11-bit frame sync, then a valid MPEG version (not 01) and layer (not 00); AAC
    # ADTS shares the sync but has layer 00.
    if len(head) < 2 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    return (head[1] >> 3) & 0x3 != 0x1 and (head[1] >> 1) & 0x3 != 0x0

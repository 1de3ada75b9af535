"""Media in requests: data URLs and base64, a check of what the bytes are, remote URLs by allow-list.

The web tier decodes nothing (the encoder does, with its own limits); it checks that each item is
well-formed base64 of a format the services accept for that modality, so a bad part is refused
here with its place in the request named, before anything reaches the gateway.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes, urlsplit

import httpx

from .errors import APIError, bad_request, too_large

# What the encoder accepts, per modality (and what the playground offers to attach).
ACCEPTED: dict[str, tuple[str, ...]] = {
    "image": ("image/png", "image/jpeg", "image/gif", "image/webp"),
    "audio": ("audio/wav", "audio/mpeg", "audio/flac", "audio/ogg"),
    "video": ("video/mp4", "video/webm"),
}
_ALIASES = {
    "image/jpg": "image/jpeg",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/mp3": "audio/mpeg",
    "audio/x-mp3": "audio/mpeg",
    "audio/x-flac": "audio/flac",
    "audio/opus": "audio/ogg",
}
# input_audio's "format" field, as OpenAI names them
AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg"}
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^,;]*)*?)(?P<b64>;base64)?,", re.I)


def canonical_mime(mime: str) -> str:
    mime = mime.split(";", 1)[0].strip().lower()
    return _ALIASES.get(mime, mime)


def sniff(data: bytes) -> str | None:
    """The media type the magic bytes say ``data`` is (a few formats we refuse are named too)."""
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
    if head.startswith(b"ID3") or (
        len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and (head[1] >> 1) & 0x3 != 0
    ):
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


def b64decode(text: str, param: str, max_bytes: int) -> bytes:
    """Strict base64 (standard or URL-safe alphabet, padding optional, whitespace ignored)."""
    compact = "".join(text.split())
    if len(compact) * 3 // 4 > max_bytes:
        raise too_large(f"{param}: about {len(compact) * 3 // 4} bytes, over the limit of {max_bytes}", param)
    if "-" in compact or "_" in compact:
        compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("not valid base64", param, code="invalid_base64") from None
    if not data:
        raise bad_request("empty media", param, code="invalid_media")
    return data


def parse_data_url(url: str, param: str, max_bytes: int) -> tuple[str, bytes]:
    """``data:[<mime>][;base64],<data>`` → (declared MIME type or "", bytes)."""
    match = _DATA_URL.match(url)
    if match is None:
        raise bad_request("not a data: URL", param, code="invalid_url")
    payload = url[match.end() :]
    if match.group("b64"):
        data = b64decode(payload, param, max_bytes)
    else:
        data = unquote_to_bytes(payload)
        if len(data) > max_bytes:
            raise too_large(f"{param}: {len(data)} bytes, over the limit of {max_bytes}", param)
        if not data:
            raise bad_request("empty media", param, code="invalid_media")
    return canonical_mime(match.group("mime") or ""), data


def checked_mime(modality: str, data: bytes, declared: str, param: str) -> str:
    """The content's MIME type if it is a format accepted for ``modality``; else a 400 naming ``param``."""
    sniffed = sniff(data)
    accepted = ACCEPTED[modality]
    if sniffed is None:
        raise bad_request(
            f"the data is not a recognised {modality} file (accepted: {', '.join(accepted)})", param, "invalid_media"
        )
    if sniffed not in accepted:
        what = f"{modality} format" if sniffed.startswith(modality) else f"{modality}; it looks like"
        raise bad_request(
            f"expected {modality} data, got {sniffed} ({what} not accepted: use {', '.join(accepted)})",
            param,
            "invalid_media",
        )
    if declared and declared not in ("application/octet-stream", sniffed):
        raise bad_request(f"declared {declared} but the content is {sniffed}", param, "invalid_media")
    return sniffed


def host_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == a or (a.startswith(".") and host.endswith(a)) for a in allowed)


@dataclass
class MediaFetcher:
    """Where a URL's bytes come from: a data URL, this service's own file store, or an allowed host."""

    allowed_hosts: list[str]
    timeout_s: float
    max_bytes: int
    local_file: Callable[[str], tuple[str, bytes] | None]  # file id -> (mime, data)

    async def load(self, url: str, param: str) -> tuple[str, bytes]:
        if url.startswith("data:"):
            return parse_data_url(url, param, self.max_bytes)
        parts = urlsplit(url)
        if not parts.scheme and parts.path.startswith("/v1/files/"):
            found = self.local_file(parts.path.removeprefix("/v1/files/"))
            if found is None:
                raise APIError(404, f"{param}: {url} has expired or never existed", param=param, code="file_not_found")
            return found
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise bad_request("expected a data: URL, a /v1/files/ link or an http(s) URL", param, "invalid_url")
        if not host_allowed(parts.hostname, self.allowed_hosts):
            raise bad_request(
                f"remote media URLs are refused (host {parts.hostname!r} is not in MODAVERSE_ALLOWED_MEDIA_HOSTS); "
                "send the file inline as a data: URL",
                param,
                "url_not_allowed",
            )
        return await self._fetch(url, param)

    async def _fetch(self, url: str, param: str) -> tuple[str, bytes]:
        try:
            async with (
                httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    raise bad_request(f"fetching {url} gave HTTP {response.status_code}", param, "url_fetch_failed")
                declared = int(response.headers.get("content-length") or 0)
                if declared > self.max_bytes:
                    raise too_large(f"{param}: {declared} bytes, over the limit of {self.max_bytes}", param)
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise too_large(f"{param}: over the limit of {self.max_bytes} bytes", param)
                return "", bytes(body)  # what it is comes from the bytes, not the server's header
        except httpx.HTTPError as exc:
            raise bad_request(f"fetching {url} failed: {exc}", param, "url_fetch_failed") from None

"""Media in requests: data URLs and base64, a check of what the bytes are, remote URLs by allow-list.

The web tier decodes nothing (the encoder does, with its own limits); it checks that each item is
well-formed base64 of a format the services accept for that modality, so a bad part is refused
here with its place in the request named, before anything reaches the gateway.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes, urlsplit

import httpx

from modaverse_runtime.media import SUPPORTED_MIME_TYPES, canonical_mime, sniff_mime

from .errors import APIError, bad_request, too_large

# What the encoder accepts, per modality, canonical types only (and what the playground offers to attach).
ACCEPTED: dict[str, tuple[str, ...]] = {
    kind.value: tuple(dict.fromkeys(canonical_mime(m) for m in mimes)) for kind, mimes in SUPPORTED_MIME_TYPES.items()
}
# input_audio's "format" field, as OpenAI names them
AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg"}
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^,;]*)*?)(?P<b64>;base64)?,", re.I)


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
    sniffed = sniff_mime(data)
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
    local_file: Callable[[str], Awaitable[tuple[str, bytes] | None]]  # file id -> (mime, data): ours or a peer's

    async def load(self, url: str, param: str) -> tuple[str, bytes]:
        if url.startswith("data:"):
            return parse_data_url(url, param, self.max_bytes)
        parts = urlsplit(url)
        if not parts.scheme and parts.path.startswith("/v1/files/"):
            found = await self.local_file(parts.path.removeprefix("/v1/files/"))
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

"""Generated media kept in memory for a bounded time and size, served at ``/v1/files/{id}``.

Ids are 128-bit random: a link is the capability to read the file (like a pre-signed URL), so the
playground's ``<img>``/``<video>`` elements can load it without a bearer token. Files expire after
``files_ttl_s``; when a new file would take the store over ``files_max_mb``, the oldest files go
first. A file larger than the whole store is not kept (the response carries it inline instead).
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from . import metrics

EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "audio/wav": "wav",
    "audio/mpeg": "mp3",
    "audio/flac": "flac",
    "audio/ogg": "ogg",
}

ID_BYTES = 16  # random bytes in a file id: 128 bits, the capability to read it
FILE_ID = re.compile(rf"file-[A-Za-z0-9_-]{{{math.ceil(ID_BYTES * 4 / 3)}}}")  # what ``put`` makes (url-safe base64)


@dataclass(frozen=True)
class StoredFile:
    id: str
    mime_type: str
    data: bytes
    expires_at: float  # wall-clock seconds (time.time())

    @property
    def filename(self) -> str:
        return f"{self.id}.{EXTENSIONS.get(self.mime_type, 'bin')}"


class FileStore:
    def __init__(self, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._files: OrderedDict[str, StoredFile] = OrderedDict()  # oldest first
        self._bytes = 0

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._files)

    def put(self, data: bytes, mime_type: str) -> StoredFile | None:
        """Keep ``data``; None when it is larger than the whole store."""
        stored = StoredFile(f"file-{secrets.token_urlsafe(ID_BYTES)}", mime_type, data, self._clock() + self.ttl_s)
        return stored if self.adopt(stored) else None

    def adopt(self, stored: StoredFile) -> bool:
        """Keep ``stored`` under its own id until its own expiry (a file another replica made); False
        when it is larger than the whole store or already expired."""
        if len(stored.data) > self.max_bytes or stored.expires_at <= self._clock():
            return False
        self._expire()
        if stored.id in self._files:
            self._drop(stored.id)
        while self._files and self._bytes + len(stored.data) > self.max_bytes:
            self._drop(next(iter(self._files)))
        self._files[stored.id] = stored
        self._bytes += len(stored.data)
        self._report()
        return True

    def get(self, file_id: str) -> StoredFile | None:
        self._expire()
        return self._files.get(file_id)

    def _expire(self) -> None:
        now = self._clock()
        expired = [f.id for f in self._files.values() if f.expires_at <= now]
        for file_id in expired:
            self._drop(file_id)
        if expired:
            self._report()

    def _drop(self, file_id: str) -> None:
        self._bytes -= len(self._files.pop(file_id).data)

    def _report(self) -> None:
        metrics.FILES.set(len(self._files))
        metrics.FILE_BYTES.set(self._bytes)

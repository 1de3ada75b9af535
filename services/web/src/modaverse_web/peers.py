"""Generated files another replica of the web service holds.

Each replica keeps the media it generated in its own memory (``files.py``), but a link to a file may come
back through any replica (the playground's ``<img>``, a chat that asks about an image it was given a link
to). A replica that lacks a file asks its peers (``MODAVERSE_FILE_PEERS``: ``host:port`` entries, each
name resolved to every address it has, as a Kubernetes headless Service resolves to every ready pod) for
it at the same ``/v1/files/{id}``, marked with ``PEER_HEADER`` so that a peer answers from its own store
only and never asks further. The first peer that has it wins; the file is then kept here too, until the
time it expires there. Only well-formed file ids are looked up (the id goes into the peers' URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from . import metrics
from .files import FILE_ID, StoredFile

log = logging.getLogger(__name__)

PEER_HEADER = "x-modaverse-file-peer"
_MAX_AGE = re.compile(r"max-age=(\d+)")


@dataclass
class FilePeers:
    peers: Sequence[tuple[str, int]]
    timeout_s: float
    # Ids no peer had, for a short while: links to expired files (or made-up ids) asked again and again
    # must not make every replica ask every other each time. An id is random and handed out only once its
    # file exists, so "nobody had it" stays true, except when a peer did not answer: hence the short time.
    missing_for_s: float = 10.0
    max_missing: int = 4096
    _missing: OrderedDict[str, float] = field(default_factory=OrderedDict, repr=False)

    async def find(self, file_id: str) -> StoredFile | None:
        """The file from the first peer that has it; None when none does (or none answers in time)."""
        if not self.peers or not FILE_ID.fullmatch(file_id):
            return None
        missed = self._missing.get(file_id)
        if missed is not None and time.monotonic() - missed < self.missing_for_s:
            metrics.PEER_FILES.labels("known_missing").inc()
            return None
        found = await self._find(file_id)
        if found is None:
            self._missing[file_id] = time.monotonic()
            self._missing.move_to_end(file_id)
            while len(self._missing) > self.max_missing:
                self._missing.popitem(last=False)
        return found

    async def _find(self, file_id: str) -> StoredFile | None:
        addresses = await self._addresses()
        if not addresses:
            metrics.PEER_FILES.labels("no_peers").inc()
            return None
        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client:
            asks = [asyncio.ensure_future(self._ask(client, address, file_id)) for address in addresses]
            try:
                for ask in asyncio.as_completed(asks):
                    found = await ask
                    if found is not None:
                        metrics.PEER_FILES.labels("found").inc()
                        return found
            finally:
                for ask in asks:
                    ask.cancel()
                await asyncio.gather(*asks, return_exceptions=True)
        metrics.PEER_FILES.labels("not_found").inc()
        return None

    async def _addresses(self) -> list[str]:
        """Every address of every peer, as URL authorities (a name that does not resolve is skipped)."""
        loop = asyncio.get_running_loop()
        found: dict[str, None] = {}
        for host, port in self.peers:
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=self.timeout_s
                )
            except (OSError, TimeoutError) as exc:
                log.warning("file peers: %s does not resolve (%s)", host, exc)
                continue
            for family, *_, sockaddr in infos:
                ip = str(sockaddr[0])
                found[f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}"] = None
        return list(found)

    async def _ask(self, client: httpx.AsyncClient, address: str, file_id: str) -> StoredFile | None:
        with contextlib.suppress(httpx.HTTPError):
            reply = await client.get(f"http://{address}/v1/files/{file_id}", headers={PEER_HEADER: "1"})
            if reply.status_code == 200:
                age = _MAX_AGE.search(reply.headers.get("cache-control", ""))
                expires = time.time() + (int(age.group(1)) if age else 0)
                mime = reply.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
                return StoredFile(file_id, mime, reply.content, expires)
        return None

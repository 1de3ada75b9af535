"""Encoder rows by media digest, so each chat turn encodes only its new media.

A chat request carries the whole conversation, so every turn would send every earlier image, clip and
recording to the encoder again. The gateway keeps the rows it got (a bounded LRU, by bytes) under a
digest of the item (modality, MIME type, bytes) and the encoder's id (``EncodeResponse.encoder_id``: its
weights, dtype and transforms), sends only the items it lacks, and splices the rows back in order.

Rows are reused only under the id they were made with. The gateway looks items up under the id it last
heard; if the encoder answers with another id (a rollout), the rows found are not used: the lookup runs
again under the new id (what was just encoded is already stored under it). A turn whose items are all
cached sends the encoder nothing, so it would never hear of a rollout: when the id was last heard more
than ``id_ttl_s`` ago, such a turn first asks the encoder for its id (``identify``: the Info call, one at a
time however many turns ask). An encoder that reports no
id gets every item sent each time. Concurrent requests for the same item share one encode: the first
sends it, the others wait for its rows (and send it themselves if that call fails). An item the encoder
refuses (INVALID_ARGUMENT) is reported as if the request had been sent whole: the encoder's message names
the bad item by its place in the request it got, so a request sent in part is sent again whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2
from modaverse_runtime.errors import InvalidArgument

from . import metrics

Encode = Callable[[encoder_pb2.EncodeRequest, float | None], Awaitable[encoder_pb2.EncodeResponse]]
Identify = Callable[[float | None], Awaitable[str]]  # the encoder's id now (its Info)
Key = tuple[str, bytes]  # (encoder id, item digest)

_ROUNDS = 3  # lookups per request before it is sent whole (the encoder's id kept changing under it)
_HASH_INLINE_BYTES = 1 << 20  # hash more than this off the event loop


def digest(media: common_pb2.Media, request: encoder_pb2.EncodeRequest) -> bytes:
    """What one item's embedding depends on besides the encoder: the item, and what the request asks for."""
    h = hashlib.blake2b(digest_size=20)
    head = (
        media.modality,
        media.mime_type.strip().lower(),
        request.output_dtype,
        request.omit_imagebind,
        request.omit_projected,
    )
    h.update(repr(head).encode())
    h.update(media.data)
    return h.digest()


class _SentInPart(Exception):
    """The encoder refused an item of a request the cache had sent only in part."""


class RowCache:
    """Embeddings by key, least recently used first out once their bytes pass ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[Key, tuple[encoder_pb2.Embedding, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> encoder_pb2.Embedding | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: Key, embedding: encoder_pb2.Embedding) -> None:
        size = embedding.ByteSize()
        if size > self.max_bytes:
            return  # would evict everything and still not fit
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._entries[key] = (embedding, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted
        metrics.ENCODER_CACHE_BYTES.set(self.bytes)


class CachingEncoder:
    """``encode`` as the orchestrator calls it; with ``max_bytes`` 0, every item goes to the encoder."""

    def __init__(
        self,
        encode: Encode,
        max_bytes: int,
        identify: Identify | None = None,
        id_ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._encode = encode
        self._identify = identify
        self._id_ttl_s = id_ttl_s
        self._clock = clock
        self.cache = RowCache(max_bytes) if max_bytes > 0 else None
        self.encoder_id = ""  # the id the encoder last answered with
        self._heard = -float("inf")  # when (clock) the encoder last told its id
        self._asking: asyncio.Future[None] | None = None  # the Info call in flight
        self._in_flight: dict[Key, asyncio.Future[encoder_pb2.Embedding | None]] = {}

    async def encode(self, request: encoder_pb2.EncodeRequest, timeout: float | None) -> encoder_pb2.EncodeResponse:
        if self.cache is None or any(m.WhichOneof("source") != "data" for m in request.media):
            return await self._encode(request, timeout)  # (a uri is refused by the encoder anyway)
        items = list(request.media)
        if sum(len(m.data) for m in items) > _HASH_INLINE_BYTES:
            digests = await asyncio.to_thread(lambda: [digest(m, request) for m in items])
        else:
            digests = [digest(m, request) for m in items]
        sent: set[bytes] = set()
        try:
            for _ in range(_ROUNDS):
                encoder_id = self.encoder_id
                rows, missing = self._lookup(encoder_id, items, digests)
                if not missing and self._id_stale():
                    await self._refresh_id(timeout)
                    if self.encoder_id != encoder_id:
                        continue  # rolled out since: these rows are the old encoder's
                if missing:
                    sent.update(missing)
                    found = await self._fetch(request, encoder_id, missing, timeout)
                    if found is None:
                        continue  # another id answered, or a concurrent encode failed: look up again
                    rows.update(found)
                unique = set(digests)
                metrics.ENCODER_CACHE.labels("hit").inc(len(unique - sent))
                metrics.ENCODER_CACHE.labels("miss").inc(len(unique & sent))
                return encoder_pb2.EncodeResponse(embeddings=[rows[d] for d in digests], encoder_id=encoder_id)
        except _SentInPart:
            pass  # the encoder named the bad item by its place among those sent: send all, so the caller learns which
        metrics.ENCODER_CACHE.labels("miss").inc(len(set(digests)))
        return await self._encode(request, timeout)

    def _id_stale(self) -> bool:
        return self._identify is not None and self._clock() - self._heard > self._id_ttl_s

    def _told(self, encoder_id: str) -> None:
        self.encoder_id, self._heard = encoder_id, self._clock()

    async def _refresh_id(self, timeout: float | None) -> None:
        """Ask the encoder for its id; concurrent turns wait for the same answer. Its failure (the encoder
        is down) is the turn's."""
        assert self._identify is not None
        if self._asking is None:
            self._asking = asyncio.ensure_future(self._ask(self._identify, timeout))
        await asyncio.shield(self._asking)

    async def _ask(self, identify: Identify, timeout: float | None) -> None:
        try:
            self._told(await identify(timeout))
        finally:
            self._asking = None

    def _lookup(
        self, encoder_id: str, items: Sequence[common_pb2.Media], digests: Sequence[bytes]
    ) -> tuple[dict[bytes, encoder_pb2.Embedding], dict[bytes, common_pb2.Media]]:
        """Rows stored under ``encoder_id``, and the items (once each) it has none for."""
        assert self.cache is not None
        rows: dict[bytes, encoder_pb2.Embedding] = {}
        missing: dict[bytes, common_pb2.Media] = {}
        for media, d in zip(items, digests, strict=True):
            if d in rows or d in missing:
                continue
            hit = self.cache.get((encoder_id, d)) if encoder_id else None
            if hit is None:
                missing[d] = media
            else:
                rows[d] = hit
        return rows, missing

    async def _fetch(
        self,
        request: encoder_pb2.EncodeRequest,
        encoder_id: str,
        missing: dict[bytes, common_pb2.Media],
        timeout: float | None,
    ) -> dict[bytes, encoder_pb2.Embedding] | None:
        """Rows for ``missing`` made under ``encoder_id``: encoded here, or by a concurrent request that
        is encoding them already. None when they came (or would come) under another id, or when another
        request's encode failed: the caller looks up again."""
        loop = asyncio.get_running_loop()
        mine: dict[bytes, asyncio.Future[encoder_pb2.Embedding | None]] = {}
        theirs: dict[bytes, asyncio.Future[encoder_pb2.Embedding | None]] = {}
        for d in missing:
            pending = self._in_flight.get((encoder_id, d))
            if pending is None:
                mine[d] = self._in_flight[(encoder_id, d)] = loop.create_future()
            else:
                theirs[d] = pending
        try:
            found: dict[bytes, encoder_pb2.Embedding] = {}
            if mine:
                sub = encoder_pb2.EncodeRequest(
                    media=[missing[d] for d in mine],
                    output_dtype=request.output_dtype,
                    omit_imagebind=request.omit_imagebind,
                    omit_projected=request.omit_projected,
                )
                try:
                    reply = await self._encode(sub, timeout)
                except InvalidArgument:
                    if len(sub.media) == len(request.media):
                        raise  # the request as it came (each item once, in order): the message names its item
                    raise _SentInPart from None
                for d, embedding in zip(mine, reply.embeddings, strict=True):
                    if reply.encoder_id:
                        assert self.cache is not None
                        self.cache.put((reply.encoder_id, d), embedding)
                    found[d] = embedding
                self._told(reply.encoder_id)
                if reply.encoder_id != encoder_id:
                    return None
                for d, future in mine.items():
                    future.set_result(found[d])
            for d, future in theirs.items():
                row = await asyncio.shield(future)  # leaving must not cancel it for the request that owns it
                if row is None:
                    return None
                found[d] = row
            return found
        finally:
            for d, future in mine.items():
                if not future.done():
                    future.set_result(None)  # failed, cancelled or another id: waiters look up again
                if self._in_flight.get((encoder_id, d)) is future:
                    del self._in_flight[(encoder_id, d)]

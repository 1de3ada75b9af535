"""Running the records through the gateway: concurrency, resuming, timings, media, agreement, round trips.

Each record is one streamed chat (``AsyncClient.stream``); the time of each event is taken as it arrives
(seconds since the request was sent). Every generated file is saved as ``DIR/media/<id>-<index>.<ext>``.
Then, unless agreement is off, one Embed call scores each generated item against its prompt, and a record with
a ``round_trip`` asks its question about the first generated item in a new chat. The whole observation is
appended to ``DIR/results.jsonl`` (store.py) when the record is finished; a failure of any call is recorded
there and never stops the run.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from modaverse_protos.common.v1 import common_pb2

from ..chat import GenerationOptions, ResultBuilder
from ..client import AsyncClient
from ..encoder import media_from_file
from ..errors import ModaverseError
from ..types import (
    Done,
    GeneratedMedia,
    InvocationDone,
    InvocationError,
    InvocationStarted,
    MetaResponse,
    TextDelta,
)
from .metrics import contains_words, cosine_rows
from .progress import RunProgress
from .schema import MEDIA_KINDS, EvalRecord
from .store import Loaded, ResultStore, encode_vector

MEDIA_DIR = "media"


class EmbeddingsLike(Protocol):
    """What the gateway's Embed returns (``modaverse.Embeddings``): one (n, d) array per input kind."""

    @property
    def texts(self) -> npt.NDArray[Any]: ...
    @property
    def images(self) -> npt.NDArray[Any]: ...
    @property
    def audio(self) -> npt.NDArray[Any]: ...
    @property
    def video(self) -> npt.NDArray[Any]: ...
    @property
    def encoder_id(self) -> str: ...


Embedder = Callable[..., Awaitable[EmbeddingsLike]]  # AsyncClient.embed(texts=, images=, audio=, video=)


@dataclass(frozen=True)
class EvalOptions:
    concurrency: int = 4
    limit: int | None = None  # only the first N records of the file
    retry_failed: bool = False  # run again the records whose chat (or round trip, or Embed call) failed
    seed: int = 0  # LLM sampling and generator seed; the shuffled baseline's derangement
    agreement: bool = True
    timeout: float | None = 600.0  # per chat


@dataclass
class Plan:
    selected: list[EvalRecord]  # the records this run covers (the first ``limit``)
    pending: list[EvalRecord]  # ... of which still to run
    done: int  # ... already finished in DIR
    changed: list[str] = field(default_factory=list)  # ids stored for a different version of the record
    retried: list[str] = field(default_factory=list)  # ids run again for --retry-failed


def plan(records: Sequence[EvalRecord], loaded: Loaded, options: EvalOptions) -> Plan:
    selected = list(records if options.limit is None else records[: options.limit])
    pending, changed, retried = [], [], []
    for record in selected:
        stored = loaded.results.get(record.id)
        if stored is None:
            pending.append(record)
        elif stored.get("fingerprint") != record.fingerprint:
            changed.append(record.id)
            pending.append(record)
        elif options.retry_failed and stored.get("failed"):
            retried.append(record.id)
            pending.append(record)
    return Plan(selected, pending, len(selected) - len(pending), changed, retried)


def safe_stem(record_id: str) -> str:
    """A record id as a file name part (anything but letters, digits, ``.``, ``_`` and ``-`` becomes ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", record_id).strip(".") or "record"


def _error(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, ModaverseError):
        return {"code": exc.code.name, "message": exc.details}
    return {"code": "CLIENT_ERROR", "message": f"{type(exc).__name__}: {exc}"}


def _by_kind(files: Sequence[tuple[str, Path]]) -> dict[str, list[common_pb2.Media]]:
    """(kind, path) pairs as Media messages per kind (image, audio, video), in order."""
    return {kind: [media_from_file(p, kind) for k, p in files if k == kind] for kind in MEDIA_KINDS}


class Evaluator:
    """Runs records against one gateway client (``embed``: the client's Embed, None when it has none)."""

    def __init__(self, client: AsyncClient, out_dir: Path, options: EvalOptions, embed: Embedder | None) -> None:
        self.client = client
        self.out_dir = out_dir
        self.options = options
        self.embed = embed

    def generators(self) -> dict[str, GenerationOptions]:
        return {m: GenerationOptions(seed=self.options.seed) for m in MEDIA_KINDS}

    async def evaluate(self, record: EvalRecord) -> dict[str, Any]:
        result: dict[str, Any] = {
            "id": record.id,
            "fingerprint": record.fingerprint,
            "record": record.raw,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        media = await self._chat(record, result)
        if self.options.agreement:
            result["agreement"] = await self._agreement(media) if media else {"items": [], "error": None}
        else:
            result["agreement"] = None
        if record.round_trip is not None:
            result["round_trip"] = await self._round_trip(record, media)
        errors = [result.get("chat_error"), (result.get("agreement") or {}).get("error")]
        errors.append((result.get("round_trip") or {}).get("error"))
        result["failed"] = any(errors)
        return result

    async def _chat(self, record: EvalRecord, result: dict[str, Any]) -> list[tuple[GeneratedMedia, Path]]:
        builder = ResultBuilder()
        timings: dict[str, float | None] = {"first_token_s": None, "meta_response_s": None, "total_s": None}
        started: dict[int, float] = {}
        finished: dict[int, float] = {}
        reported: dict[int, float] = {}
        chat_error = None
        t0 = time.perf_counter()
        try:
            inputs = _by_kind([(m.kind, m.path) for m in record.media])
            events = self.client.stream(
                record.instruction,
                images=inputs["image"],
                audio=inputs["audio"],
                video=inputs["video"],
                timeout=self.options.timeout,
                generators=self.generators(),
                seed=self.options.seed,
            )
            async for event in events:
                now = time.perf_counter() - t0
                builder.add(event)
                if isinstance(event, TextDelta):
                    if timings["first_token_s"] is None:
                        timings["first_token_s"] = now
                elif isinstance(event, MetaResponse):
                    timings["meta_response_s"] = now
                elif isinstance(event, InvocationStarted):
                    started[event.invocation.index] = now
                elif isinstance(event, InvocationDone):
                    finished[event.index] = now
                    reported[event.index] = event.elapsed_seconds
                elif isinstance(event, InvocationError):
                    finished[event.index] = now
        except Exception as exc:  # any failure is this record's, never the run's
            chat_error = _error(exc)
        timings["total_s"] = time.perf_counter() - t0
        chat = builder.result
        meta = chat.meta_response
        if meta is None and chat_error is None:
            chat_error = {"code": "NO_META_RESPONSE", "message": "the chat ended without a meta-response"}
        saved: list[tuple[GeneratedMedia, Path]] = []
        files: dict[int, str] = {}
        for item in sorted(chat.media, key=lambda m: m.invocation.index):
            stem = f"{safe_stem(record.id)}-{item.invocation.index}"
            path = item.save(self.out_dir / MEDIA_DIR, stem)
            files[item.invocation.index] = f"{MEDIA_DIR}/{path.name}"
            saved.append((item, path))
        errors = {e.index: {"code": e.code, "message": e.message} for e in chat.errors}
        invocations = []
        for inv in meta.invocations if meta is not None else []:
            seen = finished[inv.index] - started[inv.index] if inv.index in started and inv.index in finished else None
            invocations.append(
                {
                    "index": inv.index,
                    "modality": inv.modality,
                    "prompt": inv.prompt,
                    "model": inv.model,
                    "started_s": started.get(inv.index),
                    "seen_s": seen if inv.index in files else None,
                    "reported_s": reported.get(inv.index),
                    "file": files.get(inv.index),
                    "error": errors.get(inv.index),
                }
            )
        routed = "error" if meta is None else routed_modality(meta)
        result.update(
            routed=routed,
            meta_response=meta.raw if meta is not None else None,
            parsed=meta.parsed if meta is not None else None,
            answer=meta.answer if meta is not None else None,
            invocations=invocations,
            timings=timings,
            chat_error=chat_error,
            done=_done(chat.done),
        )
        return saved

    async def _agreement(self, media: list[tuple[GeneratedMedia, Path]]) -> dict[str, Any]:
        if self.embed is None:
            return {"items": [], "error": {"code": "UNSUPPORTED", "message": "this SDK's client has no embed()"}}
        media = [(item, path) for item, path in media if item.invocation.modality in MEDIA_KINDS]
        if not media:
            return {"items": [], "error": None}
        inputs = _by_kind([(item.invocation.modality, path) for item, path in media])
        try:
            embeddings = await self.embed(
                texts=[item.invocation.prompt for item, _ in media],
                images=inputs["image"],
                audio=inputs["audio"],
                video=inputs["video"],
            )
        except Exception as exc:
            return {"items": [], "error": _error(exc)}
        arrays = {"image": embeddings.images, "audio": embeddings.audio, "video": embeddings.video}
        texts = np.asarray(embeddings.texts)
        counts = {kind: sum(item.invocation.modality == kind for item, _ in media) for kind in MEDIA_KINDS}
        shapes = [texts.shape[0], *(np.asarray(arrays[k]).shape[0] for k in MEDIA_KINDS)]
        if shapes != [len(media), *counts.values()]:
            message = f"Embed returned {shapes} rows (texts, images, audio, video) for {len(media)} item(s)"
            return {"items": [], "error": {"code": "CLIENT_ERROR", "message": message}}
        taken = dict.fromkeys(MEDIA_KINDS, 0)
        items = []
        for row, (item, _) in enumerate(media):
            kind = item.invocation.modality
            vector = np.asarray(arrays[kind])[taken[kind]]
            taken[kind] += 1
            items.append(
                {
                    "index": item.invocation.index,
                    "modality": kind,
                    "prompt": item.invocation.prompt,
                    "matched": float(cosine_rows(vector[None, :], texts[row][None, :])[0]),
                    "item_vector": encode_vector(vector),
                    "text_vector": encode_vector(texts[row]),
                }
            )
        return {"encoder_id": embeddings.encoder_id, "items": items, "error": None}

    async def _round_trip(self, record: EvalRecord, media: list[tuple[GeneratedMedia, Path]]) -> dict[str, Any]:
        assert record.round_trip is not None
        out: dict[str, Any] = {"question": record.round_trip.question, "file": None, "answer": None}
        out.update(hits={}, error=None, skipped=None, total_s=None)
        if not media:
            out["skipped"] = "no generated item"
            return out
        item, path = media[0]
        kind = item.invocation.modality
        out["file"] = f"{MEDIA_DIR}/{path.name}"
        if kind not in MEDIA_KINDS:
            out["skipped"] = f"the first generated item has an unknown modality {kind!r}"
            return out
        t0 = time.perf_counter()
        try:
            inputs = _by_kind([(kind, path)])
            answer = await self.client.chat(
                record.round_trip.question,
                images=inputs["image"],
                audio=inputs["audio"],
                video=inputs["video"],
                timeout=self.options.timeout,
                seed=self.options.seed,
                meta_response_only=True,  # only the answer's text is scored: nothing is generated for it
            )
        except Exception as exc:
            out["error"] = _error(exc)
            return out
        finally:
            out["total_s"] = time.perf_counter() - t0
        out["answer"] = answer.text
        out["hits"] = {name: contains_words(answer.text, value) for name, value in record.round_trip.attributes.items()}
        return out


def routed_modality(meta: MetaResponse) -> str:
    """The modality an answer went to: its first invocation's, or "text" when it has none."""
    return meta.invocations[0].modality if meta.invocations else "text"


def _done(done: Done | None) -> dict[str, Any] | None:
    if done is None:
        return None
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "elapsed_s": done.elapsed_seconds,
        "failed_invocations": done.failed_invocations,
    }


async def run_records(
    evaluator: Evaluator,
    pending: Sequence[EvalRecord],
    store: ResultStore,
    progress: RunProgress | None = None,
) -> int:
    """Run ``pending`` with ``evaluator.options.concurrency`` chats at a time, appending each result as it
    finishes; returns how many finished. Cancelled (Ctrl-C): the chats in flight stop, what was written stays."""
    queue = list(reversed(pending))
    finished = 0

    async def worker() -> None:
        nonlocal finished
        while queue:
            record = queue.pop()
            result = await evaluator.evaluate(record)
            store.append(result)
            finished += 1
            if progress is not None:
                progress.advance(failed=bool(result["failed"]))

    workers = max(1, min(evaluator.options.concurrency, len(pending)))
    await asyncio.gather(*(worker() for _ in range(workers)))
    return finished

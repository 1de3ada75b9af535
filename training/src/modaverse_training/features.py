"""ImageBind vectors for the training media, computed once and cached on disk.

ImageBind is frozen, so its output per media file never changes during training: we run it once
(batched, through the encoder service's own transforms and checkpoint loader, so training sees
exactly what serving computes) and keep the vectors in ``<cache_dir>/features-<identity>.pt``.
``identity`` hashes the encoder checkpoint (its size and first 16 MiB, arch, overrides) and the
transform settings; each entry is keyed by the media file's resolved path, size and mtime. A
second run over the same media loads everything from the cache; new media are added to it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from modaverse_encoder.architectures import BRANCH_FOR_KIND
from modaverse_encoder.artifacts import EncoderArtifacts, resolve_artifacts
from modaverse_encoder.base import MediaInput
from modaverse_encoder.checkpoint import load_imagebind
from modaverse_encoder.imagebind_encoder import ImageBindEncoder
from modaverse_encoder.settings import EncoderSettings
from modaverse_runtime.media import MediaKind

from .progress import Progress, Stage

log = logging.getLogger(__name__)
_SAVE_EVERY = 2048
_HASH_PREFIX_BYTES = 16 * 2**20  # hashing all of imagebind_huge.pth (4.5 GB) would take a minute


@dataclass(frozen=True)
class FeatureStats:
    hits: int
    computed: int


def encoder_identity(artifacts: EncoderArtifacts, settings: EncoderSettings) -> str:
    digest = hashlib.sha256()
    with artifacts.checkpoint.open("rb") as handle:
        digest.update(handle.read(_HASH_PREFIX_BYTES))
    meta = {
        "size": artifacts.checkpoint.stat().st_size,
        "arch": artifacts.arch,
        "overrides": artifacts.arch_overrides or {},
        "clips": [settings.audio_clips, settings.video_clips, settings.video_spatial_crops],
    }
    digest.update(json.dumps(meta, sort_keys=True).encode())
    return digest.hexdigest()[:20]


def media_key(kind: str, path: Path) -> str:
    stat = path.stat()
    return f"{kind}:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _batches(items: Sequence[tuple[str, Path]], size: int) -> Iterator[Sequence[tuple[str, Path]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class FeatureCache:
    """``vectors(media)`` → (len(media), embed_dim) float32, computing only what the cache lacks."""

    def __init__(self, settings: EncoderSettings, cache_dir: Path, batch_size: int = 32) -> None:
        self.settings = settings
        self.artifacts = resolve_artifacts(settings)
        self.identity = encoder_identity(self.artifacts, settings)
        self.path = cache_dir / f"features-{self.identity}.pt"
        self.batch_size = batch_size
        self._table: dict[str, torch.Tensor] = {}
        if self.path.is_file():
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            self._table = dict(zip(saved["keys"], saved["vectors"].unbind(0), strict=True))

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self._table)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"keys": keys, "vectors": torch.stack([self._table[k] for k in keys])}, tmp)
        os.replace(tmp, self.path)  # atomic: a crash never leaves a half-written cache

    def vectors(
        self, media: Sequence[tuple[str, Path]], progress: bool | Progress = True
    ) -> tuple[torch.Tensor, FeatureStats]:
        keys = [media_key(kind, path) for kind, path in media]
        missing = {k: item for k, item in zip(keys, media, strict=True) if k not in self._table}
        hits = len(set(keys)) - len(missing)
        if missing:
            shown = progress if isinstance(progress, Progress) else Progress.create("auto" if progress else "off")
            with shown.stage("ImageBind features", total=len(missing), unit="item") as stage:
                self._compute(missing, stage)
            self._save()
        return torch.stack([self._table[k] for k in keys]), FeatureStats(hits, len(missing))

    def _compute(self, missing: dict[str, tuple[str, Path]], stage: Stage) -> None:
        by_kind: dict[str, list[tuple[str, Path]]] = {}
        for key, (kind, path) in missing.items():
            by_kind.setdefault(kind, []).append((key, path))
        stage.status("loading ImageBind")
        encoder = ImageBindEncoder(self.settings)  # not loaded: used for its transforms only
        model = load_imagebind(
            self.artifacts.checkpoint,
            self.artifacts.arch,
            {BRANCH_FOR_KIND[k] for k in by_kind},
            overrides=self.artifacts.arch_overrides,
        )

        def prepare(item: tuple[str, Path]) -> torch.Tensor:
            key, path = item
            return encoder.preprocess(MediaInput(MediaKind(missing[key][0]), path.read_bytes()))

        done = 0
        # Decoding/transforms of the next batch overlap the forward pass of this one.
        with ThreadPoolExecutor(2) as pool, torch.inference_mode():
            for kind, items in by_kind.items():
                branch = BRANCH_FOR_KIND[kind]
                stage.status(f"encoding {kind}")
                pending = None
                for batch in [*_batches(items, self.batch_size), []]:
                    future = pool.map(prepare, batch) if batch else None
                    if pending is not None:
                        keys, tensors = pending
                        out = model({branch: torch.stack(list(tensors))})[branch].float()
                        self._table.update(zip(keys, out.unbind(0), strict=True))
                        stage.update(len(keys))
                        done += len(keys)
                        if done % _SAVE_EVERY < len(keys):  # an interrupted run keeps what it computed
                            self._save()
                    pending = ([k for k, _ in batch], future) if future is not None else None

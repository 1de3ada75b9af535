"""The encoder's identity: one id for everything that decides its rows for given media.

Callers may reuse rows they got under the same id (the gateway's row cache, docs/gateway.md), so the
id covers the weights (ImageBind and adaptor), the compute dtype and device type (float16 on a GPU
rounds differently than float32 on a CPU), the transforms' settings and the package version (its
code). Replicas deployed alike report the same id; a rollout that changes any of these changes it.
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from .artifacts import EncoderArtifacts
from .settings import EncoderSettings

# Hashing all of imagebind_huge.pth (4.5 GB) would take a minute at start-up: its size and first
# 16 MiB (headers and the first tensors) tell releases apart.
_PREFIX_BYTES = 16 * 2**20


def _file_digest(path: Path, limit: int | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.read() if limit is None else handle.read(limit))
    return f"{path.stat().st_size}:{digest.hexdigest()}"


def _package_version() -> str:
    try:
        return version("modaverse-encoder")
    except PackageNotFoundError:
        return "unknown"


def encoder_id(artifacts: EncoderArtifacts, settings: EncoderSettings, dtype: torch.dtype, device: torch.device) -> str:
    adaptor = sorted(p for p in artifacts.adaptor_dir.rglob("*") if p.is_file())  # small: hashed whole
    parts = {
        "imagebind": _file_digest(artifacts.checkpoint, _PREFIX_BYTES),
        "arch": artifacts.arch,
        "overrides": artifacts.arch_overrides or {},
        "adaptor": {str(p.relative_to(artifacts.adaptor_dir)): _file_digest(p) for p in adaptor},
        "dtype": str(dtype),
        "device": device.type,
        "clips": [settings.audio_clips, settings.video_clips, settings.video_spatial_crops],
        "impl": settings.encoder_impl,
        "version": _package_version(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]

"""ImageBind architectures by name: constructor arguments of ``ImageBindModel``.

``imagebind_huge`` is exactly what ``imagebind_model.imagebind_huge()`` builds. The tiny
one keeps every structural choice (patch sizes, 224 px input, 2-frame video stem,
128x204 audio fbank, all six modality branches) and shrinks widths and depths, so the
same transforms, loading code and checkpoint layout serve both.
"""

from __future__ import annotations

from typing import Any

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "imagebind_huge": {
        "vision_embed_dim": 1280,
        "vision_num_blocks": 32,
        "vision_num_heads": 16,
        "text_embed_dim": 1024,
        "text_num_blocks": 24,
        "text_num_heads": 16,
        "out_embed_dim": 1024,
        "audio_drop_path": 0.1,
        "imu_drop_path": 0.7,
    },
    # Width 256 for vision: a frozen random encoder this size still separates colour and
    # (non-linearly) shape in our probes (docs/architecture.md#findings); one block keeps CPU cost
    # ~7 ms/img.
    "imagebind_tiny": {
        "out_embed_dim": 256,
        "vision_embed_dim": 256,
        "vision_num_blocks": 1,
        "vision_num_heads": 8,
        "audio_embed_dim": 128,
        "audio_num_blocks": 1,
        "audio_num_heads": 4,
        "audio_drop_path": 0.0,
        "text_embed_dim": 128,
        "text_num_blocks": 1,
        "text_num_heads": 4,
        "depth_embed_dim": 32,
        "depth_num_blocks": 1,
        "depth_num_heads": 2,
        "thermal_embed_dim": 32,
        "thermal_num_blocks": 1,
        "thermal_num_heads": 2,
        "imu_embed_dim": 32,
        "imu_num_blocks": 1,
        "imu_num_heads": 2,
        "imu_drop_path": 0.0,
    },
}

# ImageBind branch for each of our input kinds: video frames go through the vision
# branch, as the release does.
BRANCH_FOR_KIND = {"image": "vision", "video": "vision", "audio": "audio"}
# Texts (the encoder's text items; not a media kind) go through ImageBind's text branch.
TEXT_BRANCH = "text"


def architecture_kwargs(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown ImageBind architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    return {**ARCHITECTURES[name], **(overrides or {})}

"""Video → ImageBind vision input, as ImageBind's ``load_and_transform_video_data``.

Per clip (times from the clip sampler): the frames decord returns for
``get_clip(start, end)`` (indices ``ceil(fps·start) .. min(ceil(fps·end), n) − 1``),
``UniformTemporalSubsample(frames_per_clip)``, ``/ 255``, ``ShortSideScale(size)``
(bilinear), CLIP normalisation, then ``SpatialCrop(size, spatial_crops)``: for each
clip its crops 0, 1, 2 (left/centre/right, or top/centre/bottom for tall videos).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch

from .clips import clip_timepoints_exact
from .image import normalize_channels

__all__ = ["VideoSource", "clip_frame_indices", "short_side_scale", "uniform_crop", "video_to_clips"]


class VideoSource(Protocol):
    """What the transform needs of a decoded video (``modaverse_runtime.media.DecodedVideo``)."""

    @property
    def duration(self) -> float: ...
    @property
    def fps(self) -> float: ...
    @property
    def num_frames(self) -> int: ...
    def frames_at(self, times: Sequence[float]) -> npt.NDArray[np.uint8]: ...


def video_to_clips(
    video: VideoSource,
    *,
    size: int = 224,
    clip_duration: float = 2.0,
    clips_per_item: int = 5,
    frames_per_clip: int = 2,
    spatial_crops: int = 3,
) -> torch.Tensor:
    """float32 (clips_per_item · spatial_crops, 3, frames_per_clip, size, size)."""
    if spatial_crops not in (1, 3):
        raise ValueError(f"spatial_crops must be 1 or 3, got {spatial_crops}")
    indices = clip_frame_indices(video.duration, video.fps, video.num_frames, clip_duration, clips_per_item)
    picks = [_uniform_temporal_subsample(clip, frames_per_clip) for clip in indices]
    flat = [i for clip in picks for i in clip]
    # One sequential decode for every clip; frame i is shown from i / fps on.
    frames = torch.from_numpy(np.ascontiguousarray(video.frames_at([i / video.fps for i in flat])))
    crops = [1] if spatial_crops == 1 else [0, 1, 2]
    out: list[torch.Tensor] = []
    # Clip by clip, so only one clip's frames are ever held in float at full resolution.
    for clip_frames in torch.split(frames, frames_per_clip):
        # (T, H, W, 3) uint8 → (3, T, H, W) float in [0, 1], the release's clip layout.
        clip = clip_frames.permute(3, 0, 1, 2).to(torch.float32) / 255.0
        clip = normalize_channels(short_side_scale(clip, size), dim=0)
        out.extend(uniform_crop(clip, size, idx) for idx in crops)
    return torch.stack(out)


def clip_frame_indices(
    duration: float, fps: float, num_frames: int, clip_duration: float, clips_per_item: int
) -> list[list[int]]:
    """Frame indices in each clip, as pytorchvideo's decord ``get_clip`` picks them.

    Frames with timestamps ``i / fps`` in ``[start, end)``. A clip that would hold no
    frame (only at frame rates under 1 / clip_duration) gets the frame shown at its
    start instead of failing like the release.
    """
    if num_frames <= 0 or fps <= 0:
        raise ValueError(f"video has no frames (num_frames={num_frames}, fps={fps})")
    clips = []
    for start, end in clip_timepoints_exact(duration, clip_duration, clips_per_item):
        first = math.ceil(fps * float(start))
        stop = min(math.ceil(fps * float(end)), num_frames)
        clips.append(list(range(first, stop)) or [min(math.floor(fps * float(start)), num_frames - 1)])
    return clips


def _uniform_temporal_subsample(indices: list[int], num_samples: int) -> list[int]:
    # pytorchvideo: torch.linspace(0, t - 1, n) in float32, clamped, truncated by .long().
    t = len(indices)
    picks = torch.linspace(0, t - 1, num_samples).clamp(0, t - 1).long().tolist()
    return [indices[p] for p in picks]


def short_side_scale(x: torch.Tensor, size: int) -> torch.Tensor:
    """pytorchvideo ShortSideScale on (C, T, H, W): bilinear, align_corners=False.

    The longer side becomes ``floor(long / short · size)``.
    """
    _, _, h, w = x.shape
    if w < h:
        new_h, new_w = math.floor((float(h) / w) * size), size
    else:
        new_h, new_w = size, math.floor((float(w) / h) * size)
    return torch.nn.functional.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)


def uniform_crop(x: torch.Tensor, size: int, spatial_idx: int) -> torch.Tensor:
    """ImageBind's ``uniform_crop`` on (C, T, H, W): 0/1/2 = left/centre/right (top/centre/bottom if tall)."""
    height, width = x.shape[-2:]
    y = math.ceil((height - size) / 2)
    x0 = math.ceil((width - size) / 2)
    if height > width:
        y = {0: 0, 1: y, 2: height - size}[spatial_idx]
    else:
        x0 = {0: 0, 1: x0, 2: width - size}[spatial_idx]
    return x[..., y : y + size, x0 : x0 + size]

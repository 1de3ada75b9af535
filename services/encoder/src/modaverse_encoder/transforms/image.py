"""Image → ImageBind vision input, as ImageBind's ``load_and_transform_vision_data``.

The reference is torchvision ``Resize(224, BICUBIC)``, ``CenterCrop(224)``, ``ToTensor``
and ``Normalize(CLIP_MEAN, CLIP_STD)`` on a PIL image; torchvision resizes PIL images
with PIL itself, so doing the same steps with PIL gives the same pixels.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import torch
from PIL import Image

__all__ = ["CLIP_MEAN", "CLIP_STD", "image_to_tensor", "normalize_channels"]

# CLIP's per-channel RGB statistics, used by ImageBind for images and video frames.
CLIP_MEAN: Final = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: Final = (0.26862954, 0.26130258, 0.27577711)


# Shaped (3, 1, 1) so each channel is normalised as one contiguous plane: broadcasting over a
# trailing axis of 3 (HWC) defeats NumPy's vector loops and took ~10x longer for the same result.
_MEAN_CHW = np.asarray(CLIP_MEAN, dtype=np.float32).reshape(3, 1, 1)
_STD_CHW = np.asarray(CLIP_STD, dtype=np.float32).reshape(3, 1, 1)


def image_to_tensor(img: Image.Image, size: int = 224) -> torch.Tensor:
    """float32 (3, size, size): shorter side to ``size`` (bicubic), centre crop, CLIP-normalised."""
    if img.mode != "RGB":
        img = img.convert("RGB")  # the reference opens every image with .convert("RGB")
    resized = img.resize(_resized_size(img.width, img.height, size), Image.Resampling.BICUBIC)
    # torchvision CenterCrop: offsets int(round((dim - size) / 2)) with Python's round.
    left = round((resized.width - size) / 2.0)
    top = round((resized.height - size) / 2.0)
    cropped = resized.crop((left, top, left + size, top + size))
    # ToTensor (HWC uint8 → CHW float32 in [0, 1]) then Normalize, in NumPy: this runs on
    # preprocessing threads, and torch ops there would compete for the model's intra-op pool.
    # The same float32 operations per element as before, so the result is bit-identical.
    planes = np.ascontiguousarray(np.asarray(cropped).transpose(2, 0, 1)).astype(np.float32)
    planes /= np.float32(255)
    planes -= _MEAN_CHW
    planes /= _STD_CHW
    return torch.from_numpy(planes)


def normalize_channels(x: torch.Tensor, dim: int) -> torch.Tensor:
    """(x - CLIP_MEAN) / CLIP_STD along the RGB dimension ``dim`` (as torchvision Normalize)."""
    shape = [1] * x.dim()
    shape[dim] = 3
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype).view(shape)
    std = torch.tensor(CLIP_STD, dtype=x.dtype).view(shape)
    return x.sub(mean).div(std)


def _resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision Resize(int) on PIL: shorter side → size, longer → int(size * long / short)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size

"""Clip start/end times, as ImageBind samples them.

ImageBind's data module walks pytorchvideo's ``ConstantClipsPerVideoSampler`` with
``get_clip_timepoints``; this reproduces the same times without pytorchvideo.
"""

from __future__ import annotations

from fractions import Fraction

__all__ = ["clip_timepoints", "clip_timepoints_exact"]


def clip_timepoints_exact(
    duration: float, clip_duration: float, clips_per_item: int
) -> list[tuple[Fraction, Fraction]]:
    """``(start, end)`` of each clip as exact fractions of a second.

    Starts are spread evenly over ``[0, duration - clip_duration]``; when the input is
    shorter than one clip every clip starts at 0. Ends are ``start + clip_duration`` and
    may run past ``duration``. The sampler computes in ``Fraction`` (from the float
    ``max(duration - clip_duration, 0)``), and sample/frame indices derived from these
    times depend on that exactness, so callers that index should use this form.
    """
    if clips_per_item < 1:
        raise ValueError(f"clips_per_item must be at least 1, got {clips_per_item}")
    if clip_duration <= 0:
        raise ValueError(f"clip_duration must be positive, got {clip_duration}")
    max_start = Fraction(max(duration - clip_duration, 0))
    step = max_start / max(clips_per_item - 1, 1)
    length = Fraction(clip_duration)
    # The sampler also stops early once a start would pass max_start, which with exact
    # arithmetic never happens before clips_per_item clips: there are always that many.
    return [(step * i, step * i + length) for i in range(clips_per_item)]


def clip_timepoints(duration: float, clip_duration: float, clips_per_item: int) -> list[tuple[float, float]]:
    """``(start, end)`` seconds of each clip (see :func:`clip_timepoints_exact`)."""
    return [(float(start), float(end)) for start, end in clip_timepoints_exact(duration, clip_duration, clips_per_item)]

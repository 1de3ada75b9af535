"""How the command-line tools show a duration (the SDK's eval progress, and training's, which builds on the SDK)."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    """``42s``, ``3:07``, ``1:02:03`` (rounded to whole seconds; negative counts as 0)."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}" if minutes else f"{secs}s"

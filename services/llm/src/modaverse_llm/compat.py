"""Coexistence with the encoder in one process (tests, embedded mode).

The encoder registers a stand-in ``timm`` module without a ``__spec__`` when the real timm cannot be
imported (modaverse_encoder.imagebind_compat). transformers then fails in ``find_spec("timm")`` on
its first availability check. That check is cached, so we run it once with the stand-in hidden.
"""

from __future__ import annotations

import functools
import sys


@functools.cache
def prime_transformers() -> None:
    hidden: dict[str, object] = {
        name: sys.modules.pop(name)
        for name in ("timm", "timm.layers")
        if name in sys.modules and getattr(sys.modules[name], "__spec__", None) is None
    }
    try:
        from transformers.utils import import_utils

        import_utils.is_timm_available()
    finally:
        sys.modules.update(hidden)  # type: ignore[arg-type]

"""What every model role (encoder, LLM backend, generator) has in common."""

from __future__ import annotations

import abc
import logging
import time

from .errors import Unavailable

log = logging.getLogger(__name__)


class ModelBase(abc.ABC):
    """A loadable model. ``load``/``unload`` are blocking; servers call them off the loop."""

    role: str = "model"

    def __init__(self) -> None:
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    def load(self) -> None:
        start = time.perf_counter()
        self._load()
        self._ready = True
        log.info("%s %s loaded in %.2fs", self.role, self.describe(), time.perf_counter() - start)

    def unload(self) -> None:
        self._ready = False
        self._unload()

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop background work (batchers, queues) before ``unload``; called on the event loop."""

    def require_ready(self) -> None:
        if not self._ready:
            raise Unavailable(f"{self.role} is not ready (models loading or shutting down); retry shortly")

    @abc.abstractmethod
    def _load(self) -> None: ...

    def _unload(self) -> None:  # noqa: B027 - optional hook
        """Release memory; the default relies on garbage collection."""

    def describe(self) -> str:
        return type(self).__name__

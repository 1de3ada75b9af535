"""Building model artifacts once, safely when several processes start at the same time."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def ensure_built(target: Path, ready: str, build: Callable[[Path], None], what: str) -> Path:
    """Return ``target``, building it first with ``build(staging_dir)`` unless ``target/ready`` exists.

    The build writes into a private staging folder that is renamed into place (atomic on one
    file system), so readers never see half-written artifacts and a process that loses the race
    to a concurrent builder just uses the winner's result.
    """
    if (target / ready).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        log.info("building %s in %s", what, target)
        build(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / ready).is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target

"""Telling that a mounted file changed without reading it.

Kubernetes updates a mounted Secret or ConfigMap by writing the new contents into a fresh folder and
swapping the ``..data`` symlink to it: the file's path stays while its resolved target, inode and mtime
change. The token files (``security.WatchedFile``) and the gateway's routing file are watched this way.
"""

from __future__ import annotations

import os
from pathlib import Path

Stamp = tuple[str, int, int, int, int]


def file_stamp(path: Path | None) -> Stamp | None:
    """What changes when the file does: its resolved target (a ``..data`` symlink swap changes it even when
    size and mtime happen to match), device, inode, size and mtime. None: no path, or no such file."""
    if path is None:
        return None
    try:
        target = os.path.realpath(path)
        st = os.stat(target)
    except OSError:
        return None
    return target, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns

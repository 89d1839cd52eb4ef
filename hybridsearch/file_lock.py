"""A cross-process exclusive lock on a file, for caches that several processes fill."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive_file_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (POSIX ``flock``), creating its folder.

    Concurrent processes building the same cache entry then build it once: the others
    wait and find it done. Without ``fcntl`` (not POSIX) there is no lock; callers write
    through a staging folder and a rename, so entries stay whole either way.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

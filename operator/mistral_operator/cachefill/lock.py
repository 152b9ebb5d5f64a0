"""The destination's lock (flock on `<key>.lock`): one filler per cache directory.

The kernel drops a flock when its holder dies, so a killed filler never leaves a
stale lock behind. `cacheclean` removes a key's lock file last, while it holds the
lock; so that a process which opened the old file meanwhile cannot hold "the" lock
beside one that locks the new file, a lock counts only once the locked file is still
the one at the path (same device and inode); otherwise it is opened again.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

from mistral_operator.cachefill.errors import LockedError

log = logging.getLogger("mistral_operator.cachefill")
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def _is_at(fd: int, path: Path) -> bool:
    """Whether fd is still the file at path (not removed or replaced since it was opened)."""
    try:
        there = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def try_lock(path: Path) -> int | None:
    """Take the lock at path without waiting: the fd that holds it, or None when taken.

    The file is created if missing and never opened through a symlink. Closing the fd
    (or the process ending) releases the lock.
    """
    while True:
        fd = os.open(path, _OPEN_FLAGS, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if _is_at(fd, path):
            return fd
        os.close(fd)  # removed by a cleaner after we opened it: lock the new file


def holder(path: Path) -> str:
    """Who holds the lock at path, as its holder wrote it (a pid), for messages."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return "another process"
    try:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    finally:
        os.close(fd)
    return f"pid {text}" if text else "another process"


class FillLock:
    """Held for the whole fill; waits up to `timeout` seconds (None: for ever)."""

    def __init__(self, path: Path, timeout: float | None, poll: float = 0.2) -> None:
        self.path = path
        self.timeout = timeout
        self.poll = poll
        self._fd: int | None = None

    def __enter__(self) -> FillLock:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        logged = False
        while (fd := try_lock(self.path)) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise LockedError(
                    f"locked: another filler ({holder(self.path)}) is filling "
                    f"{self.path.parent}; gave up after {self.timeout:g}s (--lock-timeout)"
                )
            if not logged:
                log.info("waiting for %s held by %s", self.path, holder(self.path))
                logged = True
            # Polling, not a blocking flock, so the timeout holds without signals.
            time.sleep(self.poll)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

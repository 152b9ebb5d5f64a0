"""The destination's lock (flock on `<key>.lock`): one filler per cache directory.

The kernel drops a flock when its holder dies, so a killed filler never leaves a
stale lock behind. The lock file is never removed: unlinking it while another
process waits on the old inode would let two fillers hold "the" lock at once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

from mistral_operator.cachefill.errors import LockedError

log = logging.getLogger("mistral_operator.cachefill")


class FillLock:
    """Held for the whole fill; waits up to `timeout` seconds (None: for ever)."""

    def __init__(self, path: Path, timeout: float | None, poll: float = 0.2) -> None:
        self.path = path
        self.timeout = timeout
        self.poll = poll
        self._fd: int | None = None

    def _holder(self, fd: int) -> str:
        try:
            text = os.pread(fd, 64, 0).decode(errors="replace").strip()
        except OSError:
            text = ""
        return f"pid {text}" if text else "another process"

    def __enter__(self) -> FillLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        logged = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = self._holder(fd)
                if deadline is not None and time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockedError(
                        f"locked: another filler ({holder}) is filling {self.path.parent}; "
                        f"gave up after {self.timeout:g}s (--lock-timeout)"
                    ) from None
                if not logged:
                    log.info("waiting for %s held by %s", self.path, holder)
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

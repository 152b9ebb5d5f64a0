"""Free space: the up-front check that refuses a fill that cannot fit, and the figures
the termination-log result reports."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NamedTuple

from mistral_operator.cachefill.errors import DiskFullError
from mistral_operator.cachefill.progress import human_bytes


class DiskUsage(NamedTuple):
    free: int
    total: int


def usage(path: Path) -> DiskUsage:
    """Free and total bytes of the filesystem holding path (tests replace this function)."""
    found = shutil.disk_usage(path)
    return DiskUsage(found.free, found.total)


def free_bytes(path: Path) -> int:
    """Free bytes of the filesystem holding path."""
    return usage(path).free


def usage_near(path: Path) -> DiskUsage | None:
    """usage() of path or, while it does not exist, of its nearest existing parent."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            try:
                return usage(candidate)
            except OSError:
                return None
    return None


def check_fits(needed: int, free: int, where: str) -> None:
    """Raise DiskFullError when the bytes still to write exceed the free space."""
    if needed > free:
        raise DiskFullError(
            f"disk full: {human_bytes(needed)} still to write but {where} has "
            f"{human_bytes(free)} free"
        )

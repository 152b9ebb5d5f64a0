"""The up-front free-space check: refuse a fill that cannot fit before writing a byte."""

from __future__ import annotations

import shutil
from pathlib import Path

from mistral_operator.cachefill.errors import DiskFullError
from mistral_operator.cachefill.progress import human_bytes


def free_bytes(path: Path) -> int:
    """Free bytes of the filesystem holding path (tests replace this function)."""
    return shutil.disk_usage(path).free


def check_fits(needed: int, free: int, where: str) -> None:
    """Raise DiskFullError when the bytes still to write exceed the free space."""
    if needed > free:
        raise DiskFullError(
            f"disk full: {human_bytes(needed)} still to write but {where} has "
            f"{human_bytes(free)} free"
        )

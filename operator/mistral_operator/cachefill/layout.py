"""Where a fill puts things next to its destination directory.

`--dest` is the directory pods mount: `<hostPath>/<cache key>`. Beside it:

    <root>/<key>/                    ready: the files plus .mistral-cache.json
    <root>/<key>.lock                the fillers' lock (flock), holds the holder's pid
    <root>/<key>.tmp-<commit>/       a fill in progress; files grow as `<path>.part`
                                     and are renamed to `<path>` once verified
    <root>/<key>.stale-<pid>/        a replaced directory, removed right after the swap

The temporary directory is named by commit so that a fill resumed after a kill
continues only with bytes of the same commit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PART_SUFFIX = ".part"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def name_component(text: str) -> str:
    """A commit (or a local source's revision label) as one safe path component."""
    return _UNSAFE.sub("_", text)[:100] or "_"


@dataclass(frozen=True)
class Layout:
    dest: Path

    @property
    def root(self) -> Path:
        return self.dest.parent

    @property
    def lock(self) -> Path:
        return self.root / f"{self.dest.name}.lock"

    def temp(self, commit: str) -> Path:
        return self.root / f"{self.dest.name}.tmp-{name_component(commit)}"

    def stale(self, pid: int) -> Path:
        return self.root / f"{self.dest.name}.stale-{pid}"

    def old_temps(self, commit: str) -> list[Path]:
        """Temporary directories of other commits: a fill of them can never finish now."""
        prefix = f"{self.dest.name}.tmp-"
        keep = self.temp(commit).name
        return sorted(p for p in self.root.glob(f"{prefix}*") if p.is_dir() and p.name != keep)


def part_path(temp: Path, rel: str) -> Path:
    return temp / f"{rel}{PART_SUFFIX}"


def safe_relative(rel: str) -> str:
    """A file path from a listing, refused if it would escape the directory."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"unsafe file path in the listing: {rel!r}")
    return rel

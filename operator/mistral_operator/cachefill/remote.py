"""What a fill needs from a source: the revision's files, and each file from an offset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mistral_operator.cachefill.verify import FileSpec


@dataclass(frozen=True)
class Revision:
    commit: str
    files: tuple[FileSpec, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


class Stream(Protocol):
    """A file's bytes from `start` on; read() returns b"" at the end."""

    start: int

    def read(self, n: int) -> bytes: ...

    def close(self) -> None: ...


class Reader(Protocol):
    def resolve(self) -> Revision: ...

    def open(self, spec: FileSpec, offset: int, end: int | None = None) -> Stream:
        """The file from offset up to end (exclusive; None: its end), or from 0 when the
        source cannot start there."""
        ...

    def close(self) -> None: ...

"""A local directory as a source: pvc:// claims mounted into the Job, and tests.

A directory has no commits and declares no hashes, so the revision label stands in
for the commit and each copy is checked by size; its sha256 is recorded in the
manifest all the same.
"""

from __future__ import annotations

import os
from pathlib import Path

from mistral_operator.cachefill.errors import NotFoundError
from mistral_operator.cachefill.manifest import MANIFEST_NAME
from mistral_operator.cachefill.remote import Revision
from mistral_operator.cachefill.sources import LocalSource
from mistral_operator.cachefill.verify import FileSpec


class LocalStream:
    def __init__(self, path: Path, offset: int) -> None:
        self._file = path.open("rb")
        self._file.seek(offset)
        self.start = offset

    def read(self, n: int) -> bytes:
        return self._file.read(n)

    def close(self) -> None:
        self._file.close()


class LocalReader:
    def __init__(self, source: LocalSource) -> None:
        self.root = Path(source.root)
        self.revision = source.revision

    def resolve(self) -> Revision:
        if not self.root.is_dir():
            raise NotFoundError(f"not found: source directory {self.root} does not exist")
        files = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            # A git checkout's metadata is not part of the weights.
            dirnames[:] = sorted(d for d in dirnames if d != ".git")
            for name in sorted(filenames):
                path = Path(dirpath, name)
                rel = path.relative_to(self.root).as_posix()
                if rel != MANIFEST_NAME and path.is_file():
                    files.append(FileSpec(rel, path.stat().st_size))
        return Revision(self.revision, tuple(files))

    def open(self, spec: FileSpec, offset: int, end: int | None = None) -> LocalStream:
        # A segment reads no further than its end: the stream need not stop it.
        return LocalStream(self.root / spec.path, offset)

    def close(self) -> None:
        pass

"""What a file must be (size and hash) and the incremental check of its bytes.

The Hub names each file's content two ways: LFS files (weights) by the sha256 of
their bytes (`X-Linked-Etag`, or `lfs.sha256` in the revision API), small files
kept in git by their git blob sha1 (`ETag`, or `blobId`), which is the sha1 of
`b"blob <size>\\0"` followed by the bytes. Every file also gets a sha256 for the
manifest, whichever way its source named it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class FileSpec:
    """One file of a revision: its path, size and the hash the source declares."""

    path: str
    size: int
    sha256: str | None = None  # LFS files
    git_sha1: str | None = None  # files stored in git

    def expected(self) -> str:
        if self.sha256:
            return f"sha256 {self.sha256}"
        if self.git_sha1:
            return f"git blob sha1 {self.git_sha1}"
        return "no hash declared"


def parse_etag(value: str | None) -> str | None:
    """A lowercase hex digest from an ETag header (`"abc"`, `W/"abc"`), or None."""
    if not value:
        return None
    digest = value.strip().removeprefix("W/").strip('"').lower()
    return digest if _SHA256.match(digest) or _SHA1.match(digest) else None


def spec_from_etag(path: str, size: int, etag: str | None) -> FileSpec:
    """A FileSpec from a resolve response: 64 hex digits are sha256, 40 a git blob sha1."""
    digest = parse_etag(etag)
    if digest and _SHA256.match(digest):
        return FileSpec(path, size, sha256=digest)
    if digest and _SHA1.match(digest):
        return FileSpec(path, size, git_sha1=digest)
    return FileSpec(path, size)


def git_blob_header(size: int) -> bytes:
    return b"blob %d\0" % size


class Digest:
    """The hashes of one file, fed chunk by chunk as it is written."""

    def __init__(self, spec: FileSpec) -> None:
        self.spec = spec
        self.reset()

    def reset(self) -> None:
        """Forget every byte seen: the file starts over."""
        spec = self.spec
        self.size = 0
        self._sha256 = hashlib.sha256()
        # The blob header needs the final size up front: the declared one.
        self._sha1 = (
            hashlib.sha1(git_blob_header(spec.size), usedforsecurity=False)
            if spec.git_sha1
            else None
        )

    def update(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        self._sha256.update(data)
        if self._sha1 is not None:
            self._sha1.update(data)

    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def mismatch(self) -> str | None:
        """Why the bytes seen are not the declared file, or None when they are."""
        spec = self.spec
        if self.size != spec.size:
            return f"size {self.size} bytes, expected {spec.size}"
        if spec.sha256 and self.sha256() != spec.sha256:
            return f"sha256 {self.sha256()}, expected {spec.sha256}"
        if spec.git_sha1 and self._sha1 is not None and self._sha1.hexdigest() != spec.git_sha1:
            return f"git blob sha1 {self._sha1.hexdigest()}, expected {spec.git_sha1}"
        return None

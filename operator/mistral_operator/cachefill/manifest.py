"""The completion manifest `.mistral-cache.json`: what a ready cache directory holds.

A directory is ready only when its manifest is there, because the manifest is
written last into the temporary directory before the atomic rename.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mistral_operator.cachefill.verify import FileSpec

MANIFEST_NAME = ".mistral-cache.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    source: str
    revision: str
    commit: str
    files: tuple[FileSpec, ...]  # sha256 set for every file

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "source": self.source,
            "revision": self.revision,
            "commit": self.commit,
            "totalBytes": self.total_bytes,
            "files": [
                {"path": f.path, "size": f.size, "sha256": f.sha256}
                | ({"gitBlobSha1": f.git_sha1} if f.git_sha1 else {})
                for f in self.files
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"manifest version {data.get('version')!r} is not {FORMAT_VERSION}")
        files = tuple(
            FileSpec(str(f["path"]), int(f["size"]), str(f["sha256"]), f.get("gitBlobSha1"))
            for f in data["files"]
        )
        return cls(str(data["source"]), str(data["revision"]), str(data["commit"]), files)

    def matches(self, source: str, revision: str) -> bool:
        """Whether this manifest is for the (source, revision) the cache key names."""
        return self.source == source and self.revision == revision


def build(
    source: str, revision: str, commit: str, specs: Iterable[FileSpec], sha256: Mapping[str, str]
) -> Manifest:
    """The manifest of a finished fill: each file's declared size, and the sha256 seen."""
    files = tuple(
        FileSpec(s.path, s.size, sha256[s.path], s.git_sha1)
        for s in sorted(specs, key=lambda s: s.path)
    )
    return Manifest(source, revision, commit, files)


def size_problems(manifest: Manifest, root: Path) -> list[str]:
    """Files of the manifest missing under root or of the wrong size (a cheap check)."""
    problems = []
    for f in manifest.files:
        try:
            size = (root / f.path).stat().st_size
        except FileNotFoundError:
            problems.append(f"{f.path}: missing")
            continue
        if size != f.size:
            problems.append(f"{f.path}: {size} bytes, manifest says {f.size}")
    return problems


def read(root: Path) -> Manifest | None:
    """The manifest in root, or None when there is none or it cannot be read."""
    try:
        return Manifest.from_json(json.loads((root / MANIFEST_NAME).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write(root: Path, manifest: Manifest) -> None:
    path = root / MANIFEST_NAME
    with path.open("w") as out:
        json.dump(manifest.to_json(), out, indent=2, sort_keys=True)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())

"""Large files in segments: where each begins, how far each got, and the hash in order.

A file larger than the segment size is fetched as several byte ranges at once, each
written at its offset into the one `<path>.part`, so a single large file keeps every
connection busy as several small files do. Beside the part, `<path>.part.segments`
records how many bytes of each segment are written:

    b"MOSEGS01"  segment size (u64 LE)  then one u64 LE per segment: bytes written

A segment's count is written after its bytes, so after a killed run it never claims
bytes that are not in the part (the page cache outlives the process). After a power
loss it may: the file's hash then fails and the whole file is fetched again.

A part with no record beside it was written from its start by a single stream: its
length is how far it got. Either form, or a record of another segment size, reads as
the byte ranges on disk, from which the segments of this run take what they can use.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mistral_operator.cachefill.verify import Digest, FileSpec

RECORD_SUFFIX = ".segments"
_MAGIC = b"MOSEGS01"
_U64 = struct.Struct("<Q")
_HEADER = len(_MAGIC) + _U64.size
HASH_READ = 8 * 1024 * 1024  # bytes the hasher reads at a time


@dataclass(frozen=True)
class Segment:
    index: int
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start


def split(size: int, segment_bytes: int) -> list[Segment]:
    """The segments of a file of `size` bytes (one when it is not larger than a segment)."""
    if segment_bytes <= 0 or size <= segment_bytes:
        return [Segment(0, 0, size)]
    return [
        Segment(i, start, min(start + segment_bytes, size))
        for i, start in enumerate(range(0, size, segment_bytes))
    ]


def record_path(part: Path) -> Path:
    return part.with_name(part.name + RECORD_SUFFIX)


def read_ranges(part: Path, size: int) -> list[tuple[int, int]]:
    """The byte ranges of the file that a previous run left in the part, within size."""
    try:
        part_size = part.stat().st_size
    except FileNotFoundError:
        return []
    try:
        raw = record_path(part).read_bytes()
    except FileNotFoundError:
        return [(0, min(part_size, size))] if part_size else []
    if len(raw) < _HEADER or raw[: len(_MAGIC)] != _MAGIC:
        return []  # a record cut short as it was made: nothing in the part is known
    (segment_bytes,) = _U64.unpack_from(raw, len(_MAGIC))
    whole = len(raw) - (len(raw) - _HEADER) % _U64.size  # a count cut short is dropped
    counts = [count for (count,) in _U64.iter_unpack(raw[_HEADER:whole])]
    ranges = []
    for segment, count in zip(split(size, segment_bytes), counts, strict=False):
        end = min(segment.start + count, segment.end, part_size)
        if end > segment.start:
            ranges.append((segment.start, end))
    return ranges


def covered(ranges: Sequence[tuple[int, int]], segment: Segment) -> int:
    """How many bytes from the segment's start the ranges hold without a gap."""
    reached = segment.start
    for start, end in sorted(ranges):
        if start <= reached < end:
            reached = end
    return min(reached, segment.end) - segment.start


def contiguous(ranges: Sequence[tuple[int, int]]) -> int:
    """How many bytes from the file's start the ranges hold without a gap."""
    return covered(ranges, Segment(0, 0, max((end for _, end in ranges), default=0)))


def present(part: Path, size: int) -> int:
    """Bytes of the file that a previous run left in the part."""
    return sum(end - start for start, end in read_ranges(part, size))


def remove_record(part: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        record_path(part).unlink()


class Record:
    """The record of one part's segments, kept up to date as bytes are written."""

    def __init__(self, part: Path, segment_bytes: int, done: Sequence[int]) -> None:
        self._fd = os.open(record_path(part), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        header = _MAGIC + _U64.pack(segment_bytes)
        os.write(self._fd, header + b"".join(_U64.pack(n) for n in done))

    def written(self, index: int, count: int) -> None:
        os.pwrite(self._fd, _U64.pack(count), _HEADER + index * _U64.size)

    def close(self) -> None:
        os.close(self._fd)


class OrderedHasher:
    """Hashes a part from its start as far as its segments are written without a gap.

    Writers call `written()` after each write; `run()` (a thread) reads what is new
    from the part and feeds the digest, until the file is whole or `stop()` is called.
    """

    def __init__(self, part: Path, spec: FileSpec, segments: Sequence[Segment]) -> None:
        self.digest = Digest(spec)
        self._segments = list(segments)
        self._done = [0] * len(segments)
        self._fd = os.open(part, os.O_RDONLY)
        self._cond = threading.Condition()
        self._stopped = False
        self.error: OSError | None = None

    def written(self, index: int, count: int) -> None:
        """Segment `index` now holds `count` bytes from its start."""
        with self._cond:
            self._done[index] = count
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _reachable(self) -> int:
        """The end of the bytes written without a gap from the file's start."""
        reached = 0
        for segment, done in zip(self._segments, self._done, strict=True):
            reached = segment.start + done
            if done < segment.length:
                break
        return reached

    def run(self) -> None:
        size = self.digest.spec.size
        try:
            while self.digest.size < size:
                with self._cond:
                    while not self._stopped and self._reachable() <= self.digest.size:
                        self._cond.wait()
                    if self._stopped:
                        return
                    reachable = self._reachable()
                while self.digest.size < reachable:
                    want = min(HASH_READ, reachable - self.digest.size)
                    data = os.pread(self._fd, want, self.digest.size)
                    if not data:
                        raise OSError(f"the part ended at byte {self.digest.size}")
                    self.digest.update(data)
        except OSError as exc:
            self.error = exc
        finally:
            os.close(self._fd)

"""Fill one cache directory: resolve, lock, fetch in parallel with resume, verify, publish.

The steps, in order:

1. A destination whose manifest names the same (source, revision) and whose files
   have the manifest's sizes is ready: return at once, before any network call.
2. Take the lock; check again (another filler may have finished meanwhile).
3. Resolve the revision to a commit and its files; refuse when the bytes still to
   write exceed the free space.
4. Fetch up to `parallel` streams at a time into `<key>.tmp-<commit>/`, each file as
   `<path>.part` resumed with Range requests, hashed as it is written, renamed to
   `<path>` once its size and hash match the source's. A file larger than
   `segment_bytes` is fetched as that many byte ranges at once (`segments.py`), so
   one large file uses every stream as several small files do.
5. Write the manifest last, then rename the temporary directory to the destination.

With `--verify-checksums` a ready destination is hashed again instead of trusted by
its sizes, and its damaged files are fetched again in place (`scrub.py`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from mistral_operator.cachefill import manifest as manifests
from mistral_operator.cachefill import segments, space
from mistral_operator.cachefill.errors import (
    ChecksumMismatchError,
    DiskFullError,
    ExitCode,
    RetryableError,
    SourceUnreachableError,
    classify,
)
from mistral_operator.cachefill.layout import Layout, part_path
from mistral_operator.cachefill.lock import FillLock
from mistral_operator.cachefill.manifest import Manifest
from mistral_operator.cachefill.progress import Counter, Reporter, human_bytes
from mistral_operator.cachefill.remote import Reader, Revision
from mistral_operator.cachefill.space import check_fits
from mistral_operator.cachefill.verify import Digest, FileSpec

log = logging.getLogger("mistral_operator.cachefill")
MiB = 1024 * 1024
WRITEBACK_BYTES = 16 * MiB  # how many written bytes of a file start their writeback


@dataclass(frozen=True)
class FillOptions:
    source: str  # as the model spells it: the manifest records it
    revision: str
    dest: Path
    parallel: int = 4
    chunk_bytes: int = MiB
    segment_bytes: int = 64 * MiB  # larger files are fetched as ranges of this size at once
    lock_timeout: float | None = None
    progress_interval: float = 10.0
    stream_retries: int = 4
    retry_delay: float = 1.0


@dataclass
class FillStats:
    """How far a fill got, filled in as it goes: the result reads it, also after a failure."""

    commit: str | None = None
    total_bytes: int | None = None  # None until the revision is resolved
    files: int | None = None
    counter: Counter | None = None  # None until the download is about to start
    ready_bytes: int = 0  # a directory found ready holds all its bytes
    verified: bool = False  # a ready directory's files were hashed again (scrub.py)
    repaired: tuple[str, ...] = ()  # the files that check replaced in place

    @property
    def done_bytes(self) -> int:
        """Bytes of the total in place: a ready directory's all, a fill's so far."""
        return self.ready_bytes if self.counter is None else self.counter.done

    @property
    def fetched_bytes(self) -> int:
        return 0 if self.counter is None else self.counter.fetched

    def resolved(self, revision: Revision) -> None:
        self.commit = revision.commit
        self.total_bytes = revision.total_bytes
        self.files = len(revision.files)

    def found_ready(self, manifest: Manifest) -> None:
        self.commit = manifest.commit
        self.total_bytes = self.ready_bytes = manifest.total_bytes
        self.files = len(manifest.files)


class StoppedError(Exception):
    """Another file failed; this one stops where it is (its part stays for a resume)."""


def ready_manifest(layout: Layout, source: str, revision: str) -> Manifest | None:
    """The destination's manifest when it is for this (source, revision) and intact."""
    found = manifests.read(layout.dest)
    if found is None or not found.matches(source, revision):
        return None
    problems = manifests.size_problems(found, layout.dest)
    if problems:
        log.warning("%s is not intact (%s); filling it again", layout.dest, "; ".join(problems))
        return None
    return found


def fill(options: FillOptions, reader: Reader, stats: FillStats | None = None) -> Manifest:
    """Fill options.dest (or find it ready); stats, if given, records how far it got."""
    stats = stats if stats is not None else FillStats()
    layout = Layout(options.dest)
    found = ready_manifest(layout, options.source, options.revision)
    if found is not None:
        log.info("%s is ready (commit %s); nothing to do", layout.dest, found.commit)
        stats.found_ready(found)
        return found
    layout.root.mkdir(parents=True, exist_ok=True)
    with FillLock(layout.lock, options.lock_timeout):
        return fill_locked(layout, options, reader, stats)


def fill_locked(layout: Layout, options: FillOptions, reader: Reader, stats: FillStats) -> Manifest:
    """The fill once the lock is held: another filler may have finished meanwhile."""
    found = ready_manifest(layout, options.source, options.revision)
    if found is not None:
        log.info("%s was filled by another filler (commit %s)", layout.dest, found.commit)
        stats.found_ready(found)
        return found
    return fill_revision(layout, options, reader, stats, reader.resolve())


def fill_revision(
    layout: Layout, options: FillOptions, reader: Reader, stats: FillStats, revision: Revision
) -> Manifest:
    """Fetch a resolved revision into its temporary directory and publish it (lock held)."""
    stats.resolved(revision)
    log.info(
        "filling %s from %s@%s (commit %s): %d files, %s",
        layout.dest,
        options.source,
        options.revision,
        revision.commit,
        len(revision.files),
        human_bytes(revision.total_bytes),
    )
    for old in layout.old_temps(revision.commit):
        log.info("removing %s: a fill of another commit", old)
        shutil.rmtree(old, ignore_errors=True)
    temp = layout.temp(revision.commit)
    temp.mkdir(exist_ok=True)
    present = bytes_present(revision, temp)
    counter = Counter(revision.total_bytes, len(revision.files))
    counter.done = present
    stats.counter = counter
    check_fits(revision.total_bytes - present, space.free_bytes(layout.root), str(layout.root))
    if present:
        log.info("resuming: %s already in %s", human_bytes(present), temp)
    with Reporter(counter, options.progress_interval):
        sha256 = fetch_all(revision, temp, reader, counter, options)
    result = manifests.build(
        options.source, options.revision, revision.commit, revision.files, sha256
    )
    manifests.write(temp, result)
    publish(layout, temp)
    log.info("%s is ready (commit %s)", layout.dest, revision.commit)
    return result


def bytes_present(revision: Revision, temp: Path) -> int:
    """Bytes a previous run left in the temporary directory (finished files and parts)."""
    total = 0
    for spec in revision.files:
        try:
            total += min((temp / spec.path).stat().st_size, spec.size)
        except FileNotFoundError:
            total += segments.present(part_path(temp, spec.path), spec.size)
    return total


def fetch_all(
    revision: Revision, temp: Path, reader: Reader, counter: Counter, options: FillOptions
) -> dict[str, str]:
    """Fetch every file, `parallel` at a time; the sha256 of each by path."""
    fetcher = Fetcher(temp, reader, counter, options)
    hashes: dict[str, str] = {}
    # Largest first, so the last file to finish is a small one; a large file's segments
    # in order, so its hash (which reads the file in order) keeps up.
    order = sorted(revision.files, key=lambda s: -s.size)
    # Segments only when the large files are too few to keep every stream busy: a file
    # in one stream is hashed as it arrives, a segmented one is read again to be hashed.
    large = sum(1 for spec in order if spec.size > options.segment_bytes)
    segment_bytes = options.segment_bytes if large < options.parallel else 0
    with ThreadPoolExecutor(max_workers=max(1, options.parallel)) as pool:
        futures: list[Future[None]] = []
        for spec in order:
            parts = segments.split(spec.size, segment_bytes)
            if len(parts) == 1:
                futures.append(pool.submit(fetcher.fetch_into, spec, hashes))
            else:
                whole = SegmentedFile(fetcher, spec, parts, hashes)
                futures += [pool.submit(whole.fetch_segment, part) for part in parts]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.exception() for f in done):
            fetcher.cancel.set()
        wait(futures)
    errors = [e for f in futures if (e := f.exception()) and not isinstance(e, StoppedError)]
    if errors:
        raise errors[0]
    return hashes


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing a range of fd to disk now, without waiting for it.

    On Linux `POSIX_FADV_DONTNEED` starts the writeback of the range's dirty pages
    (and drops only pages already clean), so the fsync before a file's rename finds
    little left to write instead of all of it, and a fill larger than memory does not
    leave gigabytes of dirty pages behind. Where that is not available, or the
    filesystem refuses it, nothing happens: the fsync still writes everything.
    """
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _with_filename(exc: OSError, path: Path) -> OSError:
    """os.write's ENOSPC names no file; the exit message should."""
    if exc.filename is None:
        return OSError(exc.errno, exc.strerror, str(path))
    return exc


def _write_error(exc: OSError, rel: str) -> Exception:
    """A full disk while writing a file becomes DiskFullError naming the repository file."""
    code, message = classify(exc)
    if code == ExitCode.DISK_FULL:
        return DiskFullError(message, path=rel)
    return exc


def hash_file(path: Path, spec: FileSpec) -> Digest:
    """The digest of what is on disk at path (empty when there is nothing)."""
    digest = Digest(spec)
    try:
        with path.open("rb") as existing:
            while block := existing.read(8 * MiB):
                digest.update(block)
    except FileNotFoundError:
        pass
    return digest


class Fetcher:
    """Fetches files into the temporary directory; shared by the download threads."""

    def __init__(self, temp: Path, reader: Reader, counter: Counter, options: FillOptions):
        self.temp = temp
        self.reader = reader
        self.counter = counter
        self.options = options
        self.cancel = threading.Event()

    def fetch_into(self, spec: FileSpec, hashes: dict[str, str]) -> None:
        hashes[spec.path] = self.fetch(spec)

    def fetch(self, spec: FileSpec) -> str:
        """Fetch one file in one stream (resuming its part), verify it, return its sha256."""
        final = self.temp / spec.path
        if final.is_file() and final.stat().st_size == spec.size:
            if spec.sha256:
                # Hashed before it was renamed from its part; an LFS hash is its sha256.
                self.counter.file_done()
                return spec.sha256
            digest = hash_file(final, spec)  # small git-stored files: cheap to check again
            if digest.mismatch() is None:
                self.counter.file_done()
                return digest.sha256()
            self.counter.add(-spec.size)
            final.unlink()
        part = part_path(self.temp, spec.path)
        part.parent.mkdir(parents=True, exist_ok=True)
        self._keep_prefix(part, spec)
        while True:
            digest = hash_file(part, spec)  # what a killed run left, if anything
            resumed = digest.size > 0
            if digest.size > spec.size:
                self.counter.add(-spec.size)  # bytes_present counted it capped at the size
                part.unlink()
                continue
            try:
                fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    digest = self.transfer(spec, fd, digest)
                    problem = digest.mismatch()
                    if problem is None:
                        os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise _write_error(_with_filename(exc, part), spec.path) from exc
            if problem is None:
                os.replace(part, final)
                self.counter.file_done()
                return digest.sha256()
            part.unlink()
            self.counter.add(-digest.size)
            if not resumed:
                raise ChecksumMismatchError(spec.path, problem)
            # The bytes kept from before may be what is wrong: fetch the whole file again.
            log.warning("%s: %s after a resume; fetching the whole file again", spec.path, problem)

    def _keep_prefix(self, part: Path, spec: FileSpec) -> None:
        """A part written in segments keeps only its bytes from the start without a gap."""
        record = segments.record_path(part)
        if not record.exists():
            return
        ranges = segments.read_ranges(part, spec.size)
        keep = segments.contiguous(ranges)
        with part.open("ab") as out:
            out.truncate(keep)
        segments.remove_record(part)
        self.counter.add(keep - sum(end - start for start, end in ranges))

    def transfer(self, spec: FileSpec, fd: int, digest: Digest) -> Digest:
        """Append the file's bytes from digest.size on, re-opening after broken streams."""
        self.retrying(
            spec, lambda: digest.size, spec.size, lambda: self.copy_stream(spec, fd, digest)
        )
        return digest

    def retrying(
        self, spec: FileSpec, position: Callable[[], int], end: int, copy: Callable[[], None]
    ) -> None:
        """Run copy until position reaches end, again after each broken stream (with a pause)."""
        failures = 0
        while position() < end:
            if self.cancel.is_set():
                raise StoppedError(spec.path)
            try:
                copy()
            except RetryableError as exc:
                failures += 1
                if failures > self.options.stream_retries:
                    raise SourceUnreachableError(str(exc)) from exc
                log.warning("%s: %s; resuming from byte %d", spec.path, exc, position())
                if self.cancel.wait(self.options.retry_delay * failures):
                    raise StoppedError(spec.path) from exc

    def copy_stream(self, spec: FileSpec, fd: int, digest: Digest) -> None:
        """Append one request's worth of bytes to fd and digest; RetryableError if short."""
        stream = self.reader.open(spec, digest.size)
        try:
            if stream.start != digest.size:
                # The source sent the file from its start: drop what we had.
                log.warning("%s: the source ignored the range; starting over", spec.path)
                os.ftruncate(fd, 0)
                self.counter.add(-digest.size)
                digest.reset()
            unflushed = 0  # written since the last start_writeback
            while data := stream.read(self.options.chunk_bytes):
                _write_all(fd, data)
                digest.update(data)
                self.counter.received(len(data))
                unflushed += len(data)
                if unflushed >= WRITEBACK_BYTES:
                    start_writeback(fd, digest.size - unflushed, unflushed)
                    unflushed = 0
                if digest.size > spec.size or self.cancel.is_set():
                    break
        finally:
            stream.close()
        if self.cancel.is_set():
            raise StoppedError(spec.path)
        if digest.size < spec.size:
            raise RetryableError(
                f"source unreachable: {spec.path}: stream ended at byte {digest.size} of "
                f"{spec.size}"
            )


class SegmentedFile:
    """One large file fetched as segments by the pool's threads (see `segments.py`).

    The first segment to start opens the part, its record and the hasher; each writes
    its range; the last to end verifies the file and renames it, or cleans up after a
    failure elsewhere. A source that ignores ranges, or a mismatch in a file resumed
    from an earlier run, has the whole file fetched again in one stream.
    """

    def __init__(
        self,
        fetcher: Fetcher,
        spec: FileSpec,
        parts: list[segments.Segment],
        hashes: dict[str, str],
    ) -> None:
        self.fetcher = fetcher
        self.spec = spec
        self.parts = parts
        self.hashes = hashes
        self.part = part_path(fetcher.temp, spec.path)
        self._lock = threading.Lock()
        self._left = len(parts)  # segments not ended yet
        self._opened = False
        self._whole = False  # the file is to be fetched in one stream instead
        self._failed = False  # a segment failed: the file is left for a resume
        self._done: list[int] = []
        self._resumed = False
        self._fd = -1
        self._record: segments.Record | None = None
        self._hasher: segments.OrderedHasher | None = None
        self._hash_thread: threading.Thread | None = None

    def fetch_segment(self, segment: segments.Segment) -> None:
        try:
            with self._lock:
                if not self._opened:
                    self._open()
            if self.spec.path not in self.hashes and not self._whole:
                self._fetch(segment)
        except StoppedError:
            if self.fetcher.cancel.is_set() or not self._whole:
                raise
            # The file is to be fetched whole, by the last segment to end: not a failure.
        except BaseException:
            self._failed = True
            raise
        finally:
            with self._lock:
                self._left -= 1
                last = self._left == 0
            if last:
                self._finish()

    def _open(self) -> None:
        self._opened = True
        fetcher, spec = self.fetcher, self.spec
        if self.fetcher.cancel.is_set():
            raise StoppedError(spec.path)
        final = fetcher.temp / spec.path
        if final.is_file() and final.stat().st_size == spec.size:
            self.hashes[spec.path] = fetcher.fetch(spec)  # verified before; checked as such
            return
        self.part.parent.mkdir(parents=True, exist_ok=True)
        ranges = segments.read_ranges(self.part, spec.size)
        self._done = [segments.covered(ranges, p) for p in self.parts]
        # bytes_present counted the ranges; a record of another segment size keeps less.
        fetcher.counter.add(sum(self._done) - sum(end - start for start, end in ranges))
        self._resumed = any(self._done)
        try:
            self._fd = os.open(self.part, os.O_WRONLY | os.O_CREAT, 0o644)
            self._record = segments.Record(self.part, self.parts[0].length, self._done)
        except OSError as exc:
            raise _write_error(_with_filename(exc, self.part), spec.path) from exc
        self._hasher = segments.OrderedHasher(self.part, spec, self.parts)
        for index, count in enumerate(self._done):
            self._hasher.written(index, count)
        self._hash_thread = threading.Thread(
            target=self._hasher.run, name=f"hash {spec.path}", daemon=True
        )
        self._hash_thread.start()

    def _fetch(self, segment: segments.Segment) -> None:
        self.fetcher.retrying(
            self.spec,
            lambda: segment.start + self._done[segment.index],
            segment.end,
            lambda: self._copy(segment),
        )

    def _stopping(self) -> bool:
        return self.fetcher.cancel.is_set() or self._whole or self._failed

    def _copy(self, segment: segments.Segment) -> None:
        """Write one request's worth of the segment at its offset; RetryableError if short."""
        fetcher, spec, index = self.fetcher, self.spec, segment.index
        record, hasher = self._record, self._hasher
        assert record is not None
        assert hasher is not None
        offset = segment.start + self._done[index]
        stream = fetcher.reader.open(spec, offset, segment.end)
        try:
            if stream.start != offset:
                log.warning("%s: the source ignored a range; fetching it in one stream", spec.path)
                self._whole = True
                raise StoppedError(spec.path)
            unflushed = 0
            while not self._stopping() and (left := segment.end - offset) > 0:
                data = stream.read(min(fetcher.options.chunk_bytes, left))
                if not data:
                    break
                try:
                    _pwrite_all(self._fd, data, offset)
                except OSError as exc:
                    raise _write_error(_with_filename(exc, self.part), spec.path) from exc
                offset += len(data)
                self._done[index] += len(data)
                record.written(index, self._done[index])
                hasher.written(index, self._done[index])
                fetcher.counter.received(len(data))
                unflushed += len(data)
                if unflushed >= WRITEBACK_BYTES:
                    start_writeback(self._fd, offset - unflushed, unflushed)
                    unflushed = 0
        finally:
            stream.close()
        if self._stopping():
            raise StoppedError(spec.path)
        if offset < segment.end:
            raise RetryableError(
                f"source unreachable: {spec.path}: stream ended at byte {offset} of segment "
                f"{segment.start}-{segment.end}"
            )

    def _close(self) -> None:
        if self._hasher is not None:
            self._hasher.stop()
        if self._hash_thread is not None:
            self._hash_thread.join()
        if self._record is not None:
            self._record.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _discard(self) -> None:
        """Remove the part and its record; the counter forgets their bytes."""
        self.part.unlink(missing_ok=True)
        segments.remove_record(self.part)
        self.fetcher.counter.add(-sum(self._done))

    def _finish(self) -> None:
        """The last segment has ended: verify and rename, or leave the part for later."""
        spec = self.spec
        if self._hasher is None or self._failed or self.fetcher.cancel.is_set():
            self._close()
            return
        if self._whole:
            self._close()
            self._discard()
            self.hashes[spec.path] = self.fetcher.fetch(spec)
            return
        assert self._hash_thread is not None
        self._hash_thread.join()  # every byte is written: the hasher reaches the end
        if self._hasher.error is not None:
            self._close()
            raise _write_error(_with_filename(self._hasher.error, self.part), spec.path)
        digest = self._hasher.digest
        problem = digest.mismatch()
        if problem is None:
            try:
                os.fsync(self._fd)
            finally:
                self._close()
            os.replace(self.part, self.fetcher.temp / spec.path)
            segments.remove_record(self.part)
            self.fetcher.counter.file_done()
            self.hashes[spec.path] = digest.sha256()
            return
        self._close()
        self._discard()
        if not self._resumed:
            raise ChecksumMismatchError(spec.path, problem)
        log.warning("%s: %s after a resume; fetching the whole file again", spec.path, problem)
        self.hashes[spec.path] = self.fetcher.fetch(spec)


def publish(layout: Layout, temp: Path) -> None:
    """Rename temp to the destination, moving a stale destination out of the way first."""
    fsync_dir(temp)
    stale = None
    if layout.dest.exists():
        stale = layout.stale(os.getpid())
        os.rename(layout.dest, stale)
    os.rename(temp, layout.dest)
    fsync_dir(layout.root)
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)


def fsync_dir(path: Path) -> None:
    """Make the renames into or out of a directory survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

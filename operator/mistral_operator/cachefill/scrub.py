"""`--verify-checksums`: hash a ready cache directory again and repair its damaged files.

A fill trusts a ready directory by its manifest and its files' sizes (`fill.py`), so
a byte flipped on disk after the fill is never noticed. With `--verify-checksums` a
destination whose manifest names the same (source, revision) is read back instead,
under the fillers' lock:

1. Hash every file the manifest lists, `parallel` at a time, against its size and
   sha256 (and git blob sha1, where recorded). A missing, resized or unreadable file
   is damaged too. An intact directory is done there: no request reaches the source.
2. Resolve the revision. When it names another commit now, the damaged files cannot
   be fetched as the manifest lists them: the destination is filled anew for the new
   commit, as a fill of a damaged directory would be.
3. Fetch the damaged files into `<key>.tmp-<commit>/` as a fill does (resumed, in
   segments, verified against the source's hash), check each against the manifest's
   sha256, then `os.replace` each over its damaged original. The manifest stays: the
   new files are the bytes it lists. A pod that has the old file open keeps reading
   it; a new open reads the new one.

The files are put in place only once every damaged one has verified, as a fill
publishes all at once; a failure leaves the verified copies in the temporary
directory, where the next run finds them.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mistral_operator.cachefill import manifest as manifests
from mistral_operator.cachefill import space
from mistral_operator.cachefill.errors import ChecksumMismatchError, NotFoundError
from mistral_operator.cachefill.fill import (
    FillOptions,
    FillStats,
    MiB,
    bytes_present,
    fetch_all,
    fill,
    fill_locked,
    fill_revision,
    fsync_dir,
)
from mistral_operator.cachefill.layout import Layout
from mistral_operator.cachefill.lock import FillLock
from mistral_operator.cachefill.manifest import Manifest
from mistral_operator.cachefill.progress import Counter, Reporter, human_bytes
from mistral_operator.cachefill.remote import Reader, Revision
from mistral_operator.cachefill.space import check_fits
from mistral_operator.cachefill.verify import Digest, FileSpec

log = logging.getLogger("mistral_operator.cachefill")
HASH_BLOCK = 8 * MiB  # bytes read at a time; hashlib releases the GIL while hashing them


def scrub(options: FillOptions, reader: Reader, stats: FillStats | None = None) -> Manifest:
    """Fill options.dest as fill() does, except that a ready one is hashed and repaired."""
    stats = stats if stats is not None else FillStats()
    layout = Layout(options.dest)
    if matching_manifest(layout, options) is None:
        return fill(options, reader, stats)
    with FillLock(layout.lock, options.lock_timeout):
        found = matching_manifest(layout, options)
        if found is None:  # removed or replaced while this run waited for the lock
            return fill_locked(layout, options, reader, stats)
        stats.found_ready(found)
        stats.verified = True
        damaged = find_damaged(layout.dest, found, options)
        if not damaged:
            return found
        return repair(layout, found, damaged, options=options, reader=reader, stats=stats)


def matching_manifest(layout: Layout, options: FillOptions) -> Manifest | None:
    """The destination's manifest when it is for this (source, revision), intact or not."""
    found = manifests.read(layout.dest)
    if found is None or not found.matches(options.source, options.revision):
        return None
    return found


def find_damaged(dest: Path, manifest: Manifest, options: FillOptions) -> dict[str, str]:
    """Hash every file of the manifest, `parallel` at a time: why each damaged one is."""
    counter = Counter(manifest.total_bytes, len(manifest.files))
    # No last line of its own: "done" when the directory is intact, else the repair's.
    reporter = Reporter(counter, options.progress_interval, phase="verify", end_phase=None)
    # Largest first, so the last file to finish is a small one.
    order = sorted(manifest.files, key=lambda entry: -entry.size)
    started = time.monotonic()
    with reporter, ThreadPoolExecutor(max_workers=max(1, options.parallel)) as pool:
        problems = list(pool.map(lambda entry: check_file(dest, entry, counter), order))
    damaged = {e.path: problem for e, problem in zip(order, problems, strict=True) if problem}
    log.info(
        "verified %s: %d files checked, %s hashed in %.1fs; %d damaged",
        dest,
        len(order),
        human_bytes(counter.done),
        time.monotonic() - started,
        len(damaged),
    )
    if not damaged:
        reporter.emit("done")
    return damaged


def check_file(dest: Path, entry: FileSpec, counter: Counter) -> str | None:
    """Why DEST's copy of entry is damaged (logged as found), or None when it is intact."""
    problem = damage(dest / entry.path, entry, counter)
    if problem is not None:
        log.warning("%s: %s", entry.path, problem)
    return problem


def damage(path: Path, entry: FileSpec, counter: Counter) -> str | None:
    """Why the file at path is not the manifest's entry, or None when it is.

    The size comes first: a file of the wrong size is damaged without reading it. The
    bytes are read unbuffered into one buffer, so a large file costs no copies.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if size != entry.size:
        return f"size {size} bytes, expected {entry.size}"
    digest = Digest(entry)
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    try:
        with path.open("rb", buffering=0) as file:
            while n := file.readinto(buffer):
                digest.update(view[:n])
                counter.add(n)
    except OSError as exc:  # EIO from a failing disk is damage the repair can fix
        return f"unreadable: {exc.strerror or exc}"
    counter.file_done()
    return digest.mismatch()


def repair(
    layout: Layout,
    manifest: Manifest,
    damaged: Mapping[str, str],
    *,
    options: FillOptions,
    reader: Reader,
    stats: FillStats,
) -> Manifest:
    """Fetch the damaged files again and put them in place; a moved revision is filled anew."""
    revision = reader.resolve()
    if revision.commit != manifest.commit:
        log.warning(
            "%s@%s is commit %s now, not %s as %s has it: filling it anew instead of repairing",
            options.source,
            options.revision,
            revision.commit,
            manifest.commit,
            layout.dest,
        )
        return fill_revision(layout, options, reader, stats, revision)
    staged = Revision(manifest.commit, repair_specs(manifest, damaged, revision))
    temp = layout.temp(manifest.commit)
    temp.mkdir(exist_ok=True)
    counter = repair_counter(manifest, staged, temp)
    stats.counter = counter
    check_fits(counter.total - counter.done, space.free_bytes(layout.root), str(layout.root))
    log.info(
        "repairing %s: fetching %d files (%s) again",
        layout.dest,
        len(staged.files),
        human_bytes(staged.total_bytes),
    )
    with Reporter(counter, options.progress_interval):
        sha256 = fetch_all(staged, temp, reader, counter, options)
    check_against_manifest(manifest, sha256, temp)
    install(temp, layout.dest, sorted(sha256))
    shutil.rmtree(temp, ignore_errors=True)
    stats.repaired = tuple(sorted(sha256))
    log.info("%s is repaired: %s", layout.dest, ", ".join(stats.repaired))
    return manifest


def repair_specs(
    manifest: Manifest, damaged: Mapping[str, str], revision: Revision
) -> tuple[FileSpec, ...]:
    """What each damaged file's new copy must be.

    The source's declared size and hash, as for any fetch, and the manifest's sha256
    where the source declares none (a git-stored file, a directory source), so a copy
    that is not the manifest's bytes fails as it is fetched. Only paths the source
    lists are fetched, and those passed its listing's path checks.
    """
    declared = {spec.path: spec for spec in revision.files}
    specs = []
    for entry in manifest.files:
        if entry.path not in damaged:
            continue
        spec = declared.get(entry.path)
        if spec is None:
            raise NotFoundError(
                f"not found: {entry.path} is no longer in {manifest.source} "
                f"at commit {manifest.commit}",
                path=entry.path,
            )
        specs.append(FileSpec(spec.path, spec.size, spec.sha256 or entry.sha256, spec.git_sha1))
    return tuple(specs)


def repair_counter(manifest: Manifest, staged: Revision, temp: Path) -> Counter:
    """Progress over the whole directory: the intact files, and what a killed run left."""
    counter = Counter(manifest.total_bytes, len(manifest.files))
    counter.done = manifest.total_bytes - staged.total_bytes + bytes_present(staged, temp)
    counter.files_done = len(manifest.files) - len(staged.files)
    return counter


def check_against_manifest(manifest: Manifest, sha256: Mapping[str, str], temp: Path) -> None:
    """Each new copy must be the bytes the manifest lists, or the manifest would be wrong.

    Only a source that declares another sha256 for the same commit can fail here; the
    copy is removed, so the next run fetches it again rather than trusting it.
    """
    for entry in manifest.files:
        got = sha256.get(entry.path)
        if got is not None and got != entry.sha256:
            (temp / entry.path).unlink(missing_ok=True)
            raise ChecksumMismatchError(
                entry.path, f"sha256 {got}, the manifest says {entry.sha256}"
            )


def install(temp: Path, dest: Path, paths: Iterable[str]) -> None:
    """Rename each verified copy over its damaged original, then make the renames durable.

    Each copy was fsynced before it was renamed into temp; what is left is the renames
    themselves, so every directory they touched, up to DEST, is fsynced (a folder the
    damage removed is made again).
    """
    touched: set[Path] = set()
    for path in paths:
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp / path, target)
        inside = target.parent.relative_to(dest)
        touched.update(dest / folder for folder in (inside, *inside.parents))
    for folder in sorted(touched, key=lambda p: -len(p.parts)):
        fsync_dir(folder)

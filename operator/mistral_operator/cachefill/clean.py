"""`mistral-operator cacheclean`: what cache GC Jobs run on a node.

For each `--remove KEY`, under `--root` (the cache hostPath):

1. take `<key>.lock`, the fillers' flock, without waiting; a filler holding it means
   the key is in use: skip it (reason `locked`);
2. rename `<key>` to `<key>.stale-<pid>` (pods that mount `<key>` from now on find
   nothing half-deleted) and remove it;
3. remove `<key>.tmp-*` (fills in progress that a killed filler left) and
   `<key>.stale-*`;
4. remove the lock file last, still holding it (`lock.py` explains why that is safe).

Nothing is followed through a symlink: a symlink is removed as the link it is, and
`shutil.rmtree` does not descend into linked directories. Keys are plain names
(`[A-Za-z0-9][A-Za-z0-9._-]*`, no `..`, not one of the layout's own suffixes).

Exit 0 when every key was removed or absent, 8 when one was skipped as locked, 1
when one could not be removed (an I/O error), 2 for a usage error (nothing removed).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mistral_operator.cachefill import space, termination
from mistral_operator.cachefill.codes import ExitCode, render_help
from mistral_operator.cachefill.errors import UsageError
from mistral_operator.cachefill.layout import Layout
from mistral_operator.cachefill.lock import try_lock
from mistral_operator.cachefill.main import add_termination_log
from mistral_operator.cachefill.result import CLEANED, CleanResult, FillResult, SkippedKey

log = logging.getLogger("mistral_operator.cachefill")

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_LAYOUT_MARKERS = (".tmp-", ".stale-")

EPILOG = render_help(
    (ExitCode.OK, ExitCode.UNEXPECTED, ExitCode.USAGE, ExitCode.LOCKED),
    {
        ExitCode.OK: (CLEANED, "every key was removed or was not there"),
        ExitCode.UNEXPECTED: (
            ExitCode.UNEXPECTED.reason,
            "a key could not be removed (an I/O error; skipped with reason error)",
        ),
        ExitCode.USAGE: (
            ExitCode.USAGE.reason,
            "usage error (a key that is not a plain name); nothing is removed",
        ),
        ExitCode.LOCKED: (ExitCode.LOCKED.reason, "a filler holds a key's lock: key skipped"),
    },
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "cacheclean",
        help="remove weight-cache directories of a node (what cache GC Jobs run)",
        description=(
            "Remove ROOT/KEY for each --remove KEY, with its temporary and stale "
            "leftovers and its lock file; a key a filler holds is skipped."
        ),
        epilog=EPILOG + "\nwith --termination-log, one JSON result object (docs/cache.md).\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--root", required=True, metavar="DIR", help="the cache hostPath holding the keys"
    )
    parser.add_argument(
        "--remove",
        action="append",
        required=True,
        metavar="KEY",
        help="a cache key to remove (repeatable)",
    )
    add_termination_log(parser)


def check_key(key: str) -> str:
    """key when it is a plain directory name of root, else UsageError."""
    if (
        not _KEY.match(key)
        or ".." in key
        or key.endswith(".lock")
        or any(marker in key for marker in _LAYOUT_MARKERS)
    ):
        raise UsageError(f"refusing key {key!r}: not a plain cache key name")
    return key


def _size_of(path: Path) -> int:
    """Bytes of the regular files at path (a file, or a tree walked without links)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size if stat.S_ISREG(st.st_mode) else 0
    total = 0
    for dirpath, _dirs, files in os.walk(path, followlinks=False):
        for name in files:
            try:
                entry = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(entry.st_mode):
                total += entry.st_size
    return total


def _remove(path: Path) -> int:
    """Remove path (a tree, a file or a link, never what a link points to); bytes freed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    freed = _size_of(path)
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)  # removes links inside as links; refuses a link at the top
    else:
        path.unlink(missing_ok=True)
    return freed


@dataclass
class Cleaner:
    root: Path
    removed: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    skipped: list[SkippedKey] = field(default_factory=list)
    freed: int = 0

    def leftovers(self, key: str) -> list[Path]:
        """`<key>.tmp-*` and `<key>.stale-*` entries of root, whatever their type."""
        prefixes = tuple(f"{key}{marker}" for marker in _LAYOUT_MARKERS)
        with os.scandir(self.root) as entries:
            return sorted(self.root / e.name for e in entries if e.name.startswith(prefixes))

    def clean(self, key: str) -> None:
        layout = Layout(self.root / key)
        if not self.root.is_dir():
            self.absent.append(key)
            return
        fd = try_lock(layout.lock)
        if fd is None:
            log.info("skipping %s: a filler holds %s", key, layout.lock)
            self.skipped.append(SkippedKey(key, "locked"))
            return
        try:
            found = False
            if os.path.lexists(layout.dest):
                found = True
                stale = layout.stale(os.getpid())
                _remove(stale)  # a previous clean of ours that died part way
                os.rename(layout.dest, stale)
                self.freed += _remove(stale)
            for leftover in self.leftovers(key):
                found = True
                self.freed += _remove(leftover)
            layout.lock.unlink(missing_ok=True)  # last, while it is held
        finally:
            os.close(fd)
        (self.removed if found else self.absent).append(key)
        log.info("%s: %s", key, "removed" if found else "not there")

    def clean_all(self, keys: Sequence[str]) -> ExitCode:
        for key in dict.fromkeys(keys):
            try:
                self.clean(key)
            except OSError as exc:
                log.error("cannot remove %s: %s", key, exc)
                self.skipped.append(SkippedKey(key, "error", f"{type(exc).__name__}: {exc}"))
        if any(s.reason != "locked" for s in self.skipped):
            return ExitCode.UNEXPECTED
        return ExitCode.LOCKED if self.skipped else ExitCode.OK

    def result(self) -> CleanResult:
        disk = space.usage_near(self.root)
        return CleanResult(
            tuple(self.removed),
            tuple(self.absent),
            tuple(self.skipped),
            self.freed,
            disk_free_bytes=None if disk is None else disk.free,
            disk_total_bytes=None if disk is None else disk.total,
        )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s cacheclean %(levelname)s %(message)s",
    )
    root = Path(os.path.realpath(args.root))  # the hostPath itself may be a link
    try:
        keys = [check_key(key) for key in args.remove]
    except UsageError as exc:
        print(f"cacheclean: {exc}", file=sys.stderr, flush=True)
        disk = space.usage_near(root)
        failed = FillResult.failed(
            exc.code,
            str(exc),
            disk_free_bytes=None if disk is None else disk.free,
            disk_total_bytes=None if disk is None else disk.total,
        )
        termination.write(args.termination_log, failed.render())
        return int(exc.code)
    cleaner = Cleaner(root)
    code = cleaner.clean_all(keys)
    result = cleaner.result()
    if code != ExitCode.OK:
        skipped = ", ".join(f"{s.key} ({s.reason})" for s in result.skipped)
        print(f"cacheclean: skipped {skipped}", file=sys.stderr, flush=True)
    termination.write(args.termination_log, result.render())
    return int(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mistral-operator")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main(["cacheclean", *sys.argv[1:]]))

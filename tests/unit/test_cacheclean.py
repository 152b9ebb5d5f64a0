"""`mistral-operator cacheclean`: removes keys under a real temporary root, skips locked ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mistral_operator.cachefill.clean import check_key, main
from mistral_operator.cachefill.codes import ExitCode
from mistral_operator.cachefill.errors import UsageError
from mistral_operator.cachefill.layout import Layout
from mistral_operator.cachefill.lock import FillLock, try_lock
from mistral_operator.cachefill.result import (
    MAX_BYTES,
    CleanResult,
    SkippedKey,
    parse_clean_result,
    parse_result,
)
from tests.support.wait import wait_for
from tests.unit.cachefill_fixtures import (
    KEY,
    OTHER,
    root_fixture,  # noqa: F401 (a fixture: pytest finds it here)
)


def make_key(root: Path, key: str) -> int:
    """A key as fills leave it (ready dir, a fill's temp dir, a stale dir, the lock);
    the bytes of its regular files."""
    dest = root / key
    (dest / "shards").mkdir(parents=True)
    (dest / "shards" / "model.safetensors").write_bytes(b"w" * 5000)
    (dest / ".mistral-cache.json").write_text("{}")
    temp = root / f"{key}.tmp-{'a' * 40}"
    temp.mkdir()
    (temp / "model.safetensors.part").write_bytes(b"p" * 300)
    stale = root / f"{key}.stale-123"
    stale.mkdir()
    (stale / "config.json").write_bytes(b"c" * 20)
    (root / f"{key}.lock").write_text("99")
    return 5000 + 2 + 300 + 20


def clean(root: Path, *keys: str, log: Path | None = None) -> int:
    args = ["cacheclean", "--root", str(root)]
    for key in keys:
        args.append(f"--remove={key}")
    if log is not None:
        args += ["--termination-log", str(log)]
    return main(args)


def cleaned(log: Path) -> CleanResult:
    text = log.read_text()
    assert len(text) <= MAX_BYTES
    found = parse_clean_result(text)
    assert found is not None, text
    assert json.loads(text)["result"] == "Cleaned"
    return found


def test_removes_a_key_and_its_leftovers_and_nothing_else(tmp_path: Path, root: Path) -> None:
    size = make_key(root, KEY)
    other_size = make_key(root, OTHER)
    (root / f"{KEY}0").mkdir()  # a longer name with KEY as its prefix: another key
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"x" * 7)
    # Links inside the key lead out of root: removed as links, their targets kept.
    (root / KEY / "escape").symlink_to(outside)
    (root / KEY / "shards" / "file-link").symlink_to(outside / "precious")
    (root / f"{KEY}.tmp-link").symlink_to(outside)
    log = tmp_path / "log"

    assert clean(root, KEY, log=log) == 0
    result = cleaned(log)
    assert result.removed == (KEY,)
    assert (result.absent, result.skipped) == ((), ())
    assert result.freed_bytes == size
    assert result.disk_free_bytes is not None
    assert result.disk_total_bytes is not None
    assert 0 < result.disk_free_bytes <= result.disk_total_bytes
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [OTHER, f"{OTHER}.tmp-{'a' * 40}", f"{OTHER}.stale-123", f"{OTHER}.lock", f"{KEY}0"]
    )
    assert (outside / "precious").read_bytes() == b"x" * 7
    assert (root / OTHER / "shards" / "model.safetensors").stat().st_size == 5000

    assert clean(root, OTHER, KEY, log=log) == 0
    again = cleaned(log)
    assert (again.removed, again.absent) == ((OTHER,), (KEY,))
    assert again.freed_bytes == other_size
    assert [p.name for p in root.iterdir()] == [f"{KEY}0"]


def test_a_key_that_is_a_link_is_unlinked_not_followed(tmp_path: Path, root: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"x")
    (root / KEY).symlink_to(outside)
    assert clean(root, KEY) == 0
    assert not os.path.lexists(root / KEY)
    assert (outside / "precious").exists()


def test_absent_keys_and_a_missing_root(tmp_path: Path, root: Path) -> None:
    log = tmp_path / "log"
    assert clean(root, KEY, log=log) == 0
    result = cleaned(log)
    assert (result.removed, result.absent, result.freed_bytes) == ((), (KEY,), 0)
    assert list(root.iterdir()) == []  # not even a lock file is left behind
    assert clean(tmp_path / "no-such-root", KEY, log=log) == 0
    assert cleaned(log).absent == (KEY,)


def test_a_root_given_through_a_link(tmp_path: Path, root: Path) -> None:
    make_key(root, KEY)
    (tmp_path / "link").symlink_to(root)
    assert clean(tmp_path / "link", KEY) == 0
    assert list(root.iterdir()) == []


def test_a_key_a_filler_holds_is_skipped(tmp_path: Path, root: Path) -> None:
    """Another process holds the flock, as a running filler does."""
    make_key(root, KEY)
    make_key(root, OTHER)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "sys.stdin.read()\n",
            str(root / f"{KEY}.lock"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    log = tmp_path / "log"
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        assert clean(root, KEY, OTHER, log=log) == ExitCode.LOCKED
        result = cleaned(log)
        assert result.skipped == (SkippedKey(KEY, "locked"),)
        assert result.removed == (OTHER,)
        assert json.loads(log.read_text())["skipped"] == [{"key": KEY, "reason": "locked"}]
        # Everything of the locked key is still there.
        assert (root / KEY / "shards" / "model.safetensors").exists()
        assert (root / f"{KEY}.tmp-{'a' * 40}").exists()
        assert (root / f"{KEY}.lock").exists()
    finally:
        holder.communicate("")
    assert clean(root, KEY, log=log) == 0  # released: now it goes
    assert cleaned(log).removed == (KEY,)
    assert list(root.iterdir()) == []


def test_a_filler_thread_holding_the_lock_is_waited_for_by_nobody(root: Path) -> None:
    """A FillLock held in this process (another fd) also makes the key skipped."""
    make_key(root, KEY)
    with FillLock(Layout(root / KEY).lock, timeout=0):
        assert clean(root, KEY) == ExitCode.LOCKED
        assert (root / KEY).is_dir()
    assert clean(root, KEY) == 0


def test_a_filler_waiting_while_the_lock_file_is_removed_locks_the_new_one(
    root: Path,
) -> None:
    """The cleaner unlinks the lock it holds; a waiting filler must not lock the old inode."""
    lock = root / f"{KEY}.lock"
    fd = try_lock(lock)
    assert fd is not None
    got = threading.Event()
    release = threading.Event()

    def filler() -> None:
        with FillLock(lock, timeout=10, poll=0.01):
            got.set()
            release.wait(10)

    thread = threading.Thread(target=filler)
    thread.start()
    try:
        lock.unlink()  # what cacheclean does last, holding the lock
        os.close(fd)
        wait_for(got.is_set, timeout=10, interval=0.01, what="the filler to take the lock")
        # It holds the file at the path, so a cleaner now finds the key locked.
        assert lock.exists()
        assert try_lock(lock) is None
        assert clean(root, KEY) == ExitCode.LOCKED
    finally:
        release.set()
        thread.join()


@pytest.mark.parametrize(
    "key",
    ["", ".", "..", "../x", "a/b", "/etc", "a/../b", "x..y", "-rf", f"{KEY}.lock",
     f"{KEY}.tmp-1", f"{KEY}.stale-1", "a b", "k\0"],
)  # fmt: skip
def test_keys_that_are_not_plain_names_are_refused(tmp_path: Path, root: Path, key: str) -> None:
    make_key(root, KEY)
    before = sorted(p.name for p in root.iterdir())
    log = tmp_path / "log"
    assert clean(root, KEY, key, log=log) == ExitCode.USAGE
    assert sorted(p.name for p in root.iterdir()) == before  # nothing removed, not even KEY
    failed = parse_result(log.read_text())
    assert failed is not None
    assert (failed.result, failed.reason, failed.exit_code) == ("Failed", "UsageError", 2)
    assert failed.message.startswith("refusing key")
    with pytest.raises(UsageError):
        check_key(key)


def test_an_io_error_skips_the_key_with_exit_1(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_key(root, KEY)
    make_key(root, OTHER)
    real_rename = os.rename

    def rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(src).name == KEY:
            raise PermissionError(13, "Permission denied", str(src))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    log = tmp_path / "log"
    assert clean(root, KEY, OTHER, log=log) == ExitCode.UNEXPECTED
    result = cleaned(log)
    assert result.removed == (OTHER,)
    (skipped,) = result.skipped
    assert (skipped.key, skipped.reason) == (KEY, "error")
    assert "Permission denied" in (skipped.message or "")
    assert (root / KEY).is_dir()


def test_the_command_line_entry_points(tmp_path: Path, root: Path) -> None:
    make_key(root, KEY)
    make_key(root, OTHER)
    log = tmp_path / "log"
    module = subprocess.run(
        [sys.executable, "-m", "mistral_operator.cachefill.clean", "--root", str(root),
         "--remove", KEY, "--termination-log", str(log)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert module.returncode == 0, module.stderr
    assert cleaned(log).removed == (KEY,)
    from mistral_operator.cli import main as cli_main  # noqa: PLC0415

    assert cli_main(["cacheclean", "--root", str(root), "--remove", OTHER]) == 0
    assert list(root.iterdir()) == []


def test_help_lists_the_clean_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    from mistral_operator.cli import main as cli_main  # noqa: PLC0415

    with pytest.raises(SystemExit):
        cli_main(["cacheclean", "--help"])
    text = capsys.readouterr().out
    for line in ("  0  Cleaned", "  2  UsageError", "  8  Locked"):
        assert line in text


def test_a_long_result_is_cut_to_the_limit_and_stays_parseable() -> None:
    keys = tuple(f"{i:04d}{KEY}" for i in range(300))
    big = CleanResult(
        removed=keys,
        absent=keys,
        skipped=(SkippedKey(KEY, "error", "e" * 5000), SkippedKey(OTHER, "locked")),
        freed_bytes=12,
        disk_free_bytes=1,
        disk_total_bytes=2,
    )
    text = big.render()
    assert len(text.encode()) <= MAX_BYTES
    found = parse_clean_result(text)
    assert found is not None
    assert found.truncated
    assert found.absent == ()  # dropped first
    assert found.removed == keys[: len(found.removed)]
    assert found.removed
    assert [s.key for s in found.skipped] == [KEY, OTHER]
    small = CleanResult((KEY,), (), (SkippedKey(OTHER, "locked"),), 5, 1, 2)
    assert parse_clean_result(small.render()) == small
    assert parse_clean_result('{"result":"Cleaned","removed":[1]}') is None
    assert parse_clean_result("cacheclean: skipped x (locked)") is None

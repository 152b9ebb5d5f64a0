"""`mistral-operator cachefill` against the stub hub: fill, resume, verify, fail clearly.

Most runs call the command's `main` in this process (quick); the kill and lock
tests run it as a real subprocess, since one is killed and two must race.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
from pathlib import Path

import pytest

from mistral_operator.cachefill import fill as fill_module
from mistral_operator.cachefill import manifest as manifests
from mistral_operator.cachefill import space
from mistral_operator.cachefill.errors import ExitCode
from mistral_operator.cachefill.fill import MiB
from mistral_operator.cachefill.progress import parse_line
from tests.support.stub_hub import StubHub, StubRepo, run_stub_hub
from tests.support.wait import wait_for
from tests.unit.cachefill_fixtures import (
    REPO,
    SHARD,
    SOURCE,
    TOKEN,
    Runner,
    dest_in,
    fill_args,
    fill_command,
    hub_env_fixture,  # noqa: F401 (a fixture: pytest finds it here)
    hub_fixture,  # noqa: F401 (a fixture: pytest finds it here)
    killed_fill,
    leave_part,
    refused_token_fixture,  # noqa: F401 (a fixture: pytest finds it here)
    repo_of,
    run_fixture,  # noqa: F401 (a fixture: pytest finds it here)
    start_fill,
    subprocess_env,
    weights,
)


def assert_ready(dest: Path, repo: StubRepo) -> None:
    found = manifests.read(dest)
    assert found is not None
    assert found.commit == repo.commit
    assert found.source == SOURCE
    assert {f.path for f in found.files} == set(repo.files)
    for f in found.files:
        data = (dest / f.path).read_bytes()
        assert data == repo.files[f.path].data
        assert f.sha256 == repo.files[f.path].sha256
    leftovers = [p.name for p in dest.parent.iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def progress_of(out: str) -> list[dict[str, object]]:
    return [p for line in out.splitlines() if (p := parse_line(line))]


def test_full_fill_verified_with_manifest(hub_env: StubHub, tmp_path: Path, run: Runner) -> None:
    dest = dest_in(tmp_path)
    code, out, err = run(fill_args(dest))
    assert code == 0, err
    repo = repo_of(hub_env)
    assert_ready(dest, repo)
    assert hub_env.bytes_served() == repo.total_bytes
    progress = progress_of(out)
    assert progress[-1]["phase"] == "done"
    assert progress[-1]["doneBytes"] == progress[-1]["totalBytes"] == repo.total_bytes
    assert progress[-1]["filesDone"] == len(repo.files)

    # A second run finds the manifest and leaves at once: no request reaches the hub.
    requests = len(hub_env.requests)
    code, _, err = run(fill_args(dest))
    assert code == 0, err
    assert "is ready" in err
    assert len(hub_env.requests) == requests


def test_a_damaged_ready_directory_is_filled_again(
    hub_env: StubHub, tmp_path: Path, run: Runner
) -> None:
    dest = dest_in(tmp_path)
    assert run(fill_args(dest))[0] == 0
    (dest / "config.json").write_bytes(b"{}")
    code, _, err = run(fill_args(dest))
    assert code == 0, err
    assert "not intact" in err
    assert_ready(dest, repo_of(hub_env))


def test_resume_fetches_only_the_missing_bytes(
    hub_env: StubHub, tmp_path: Path, run: Runner
) -> None:
    size = len(repo_of(hub_env).files[SHARD].data)
    dest = killed_fill(hub_env, tmp_path, kept=size // 2)
    code, _, err = run(fill_args(dest))
    assert code == 0, err
    assert "resuming" in err
    assert hub_env.served[f"{REPO}/{SHARD}"] == size - size // 2
    assert_ready(dest, repo_of(hub_env))


def test_a_resumed_part_that_does_not_verify_is_fetched_again(
    hub_env: StubHub, tmp_path: Path, run: Runner
) -> None:
    repo = repo_of(hub_env)
    dest = dest_in(tmp_path)
    name = "model-00002-of-00002.safetensors"
    size = len(repo.files[name].data)
    leave_part(dest, repo, name, b"\0" * 1000)  # not the file's first bytes
    code, _, err = run(fill_args(dest))
    assert code == 0, err
    assert "fetching the whole file again" in err
    assert hub_env.served[f"{REPO}/{name}"] == (size - 1000) + size
    assert_ready(dest, repo)


def test_a_source_that_ignores_range_starts_the_file_over(
    hub_env: StubHub, tmp_path: Path, run: Runner
) -> None:
    repo = repo_of(hub_env)
    size = len(repo.files[SHARD].data)
    dest = killed_fill(hub_env, tmp_path, kept=size // 2)
    hub_env.ignore_range = True  # 200 and the whole body, as some mirrors answer
    code, out, err = run(fill_args(dest))
    assert code == 0, err
    assert "ignored the range" in err
    assert hub_env.served[f"{REPO}/{SHARD}"] == size
    assert_ready(dest, repo)
    # The kept half was dropped from the count: the progress ends at the total, not above.
    assert progress_of(out)[-1]["doneBytes"] == repo.total_bytes


def test_writeback_starts_while_a_file_is_written(
    hub_env: StubHub, tmp_path: Path, run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each part asks the kernel to write its bytes as they come, in order, so the fsync
    before its rename finds little left; what it asks stays within the part."""
    asked: dict[str, list[tuple[int, int]]] = {}

    def start_writeback(fd: int, offset: int, length: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1]
        asked.setdefault(name, []).append((offset, length))
        assert offset + length <= os.fstat(fd).st_size
        real_start_writeback(fd, offset, length)

    real_start_writeback = fill_module.start_writeback
    monkeypatch.setattr(fill_module, "WRITEBACK_BYTES", 256 * 1024)
    monkeypatch.setattr(fill_module, "start_writeback", start_writeback)
    dest = dest_in(tmp_path)
    code, _, err = run(fill_args(dest))
    assert code == 0, err
    assert_ready(dest, repo_of(hub_env))
    size = len(repo_of(hub_env).files[SHARD].data)
    ranges = asked[f"{SHARD}.part"]
    assert [offset for offset, _ in ranges] == [0, *(o + n for o, n in ranges[:-1])]
    assert all(n >= 256 * 1024 for _, n in ranges)
    assert 0 <= size - sum(n for _, n in ranges) < 256 * 1024 + MiB
    assert "config.json.part" not in asked  # smaller than one writeback
    real_start_writeback(-1, 0, 1)  # a refusal (here EBADF) is no error


def test_cdn_redirect_and_a_listing_without_sizes(
    hub_env: StubHub, tmp_path: Path, run: Runner
) -> None:
    """As the real Hub: LFS files redirect to a CDN host that must not see the token."""
    hub_env.cdn_redirect = True
    hub_env.listing_blobs = False  # every file's size and hash come from a HEAD
    dest = dest_in(tmp_path)
    code, _, err = run(fill_args(dest))
    assert code == 0, err
    repo = repo_of(hub_env)
    assert_ready(dest, repo)
    assert hub_env.bytes_served() == repo.total_bytes
    heads = [path for method, path in hub_env.requests if method == "HEAD"]
    assert len(heads) == len(repo.files)
    assert any(path.startswith("/cdn/") for _, path in hub_env.requests)


def test_enospc_while_writing_exits_disk_full(
    hub_env: StubHub, tmp_path: Path, run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The up-front check passes, then the disk fills: os.write fails as a full disk does."""
    real_write = os.write
    room = [MiB]  # bytes the parts may still take

    def write(fd: int, data: bytes | memoryview) -> int:
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(".part"):
            return real_write(fd, data)
        if room[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_write(fd, data[: room[0]])  # a short write first, then ENOSPC
        room[0] -= n
        return n

    monkeypatch.setattr(os, "write", write)
    dest = dest_in(tmp_path)
    code, _, err = run(fill_args(dest))
    assert code == ExitCode.DISK_FULL
    message = next(line for line in err.splitlines() if line.startswith("cachefill: "))
    assert message.startswith("cachefill: disk full while writing"), err
    assert ".part" in message  # the file being written is named
    assert not dest.exists()


@pytest.mark.parametrize("name", ["model-00002-of-00002.safetensors", "config.json"])
def test_corrupted_byte_fails_with_the_file_named(
    hub_env: StubHub, tmp_path: Path, run: Runner, name: str
) -> None:
    hub_env.corrupt(REPO, name, offset=7)
    dest = dest_in(tmp_path)
    code, _, err = run(fill_args(dest))
    assert code == ExitCode.CHECKSUM_MISMATCH
    assert f"checksum mismatch in {name}" in err
    assert not dest.exists()


def test_auth_refused(tmp_path: Path, run: Runner, refused_token: str | None) -> None:
    code, _, err = run(fill_args(dest_in(tmp_path)))
    assert code == ExitCode.AUTH_REFUSED
    assert "auth refused" in err
    assert ("no HF_TOKEN was sent" in err) == (refused_token is None)


@pytest.mark.parametrize(
    ("source", "revision"), [("hf://mistral-sim/Missing", "main"), (SOURCE, "no-such-branch")]
)
def test_not_found(
    hub_env: StubHub,
    tmp_path: Path,
    run: Runner,
    source: str,
    revision: str,
) -> None:
    args = fill_args(dest_in(tmp_path), "--revision", revision, source=source)
    code, _, err = run(args)
    assert code == ExitCode.NOT_FOUND
    assert "not found" in err


def test_failover_to_the_second_endpoint(
    hub_env: StubHub,
    tmp_path: Path,
    run: Runner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with run_stub_hub(token=TOKEN) as mirror:
        mirror.add_repo(REPO, weights())
        hub_env.fail_status = 503
        monkeypatch.setenv("HF_ENDPOINT", f"{hub_env.url},{mirror.url}")
        dest = dest_in(tmp_path)
        code, _, err = run(fill_args(dest))
        assert code == 0, err
        assert "failing over" in err
        assert hub_env.requests  # it was asked first
        assert hub_env.bytes_served() == 0
        assert mirror.bytes_served() == repo_of(mirror).total_bytes
        assert_ready(dest, repo_of(mirror))


def test_unreachable_after_retries(
    hub_env: StubHub,
    tmp_path: Path,
    run: Runner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub_env.fail_status = 503
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there now
    monkeypatch.setenv("HF_ENDPOINT", f"{hub_env.url},{closed}")
    code, _, err = run(fill_args(dest_in(tmp_path)))
    assert code == ExitCode.SOURCE_UNREACHABLE
    assert "source unreachable" in err
    assert len(hub_env.requests) == 2  # one try and one retry round


def test_disk_full_refused_before_downloading(
    hub_env: StubHub,
    tmp_path: Path,
    run: Runner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    total = repo_of(hub_env).total_bytes
    # The filesystem reader says one byte less is free than the revision declares.
    monkeypatch.setattr(space, "free_bytes", lambda path: total - 1)
    dest = dest_in(tmp_path)
    code, _, err = run(fill_args(dest))
    assert code == ExitCode.DISK_FULL
    assert "disk full" in err
    assert hub_env.bytes_served() == 0
    assert not dest.exists()


def test_conflicting_revisions_are_a_usage_error(
    hub_env: StubHub, tmp_path: Path, run: Runner
) -> None:
    args = fill_args(dest_in(tmp_path), "--revision", "v2", source=f"{SOURCE}@main")
    code, _, err = run(args)
    assert code == ExitCode.USAGE
    assert "--revision" in err


def test_mirror_and_directory_sources(hub_env: StubHub, tmp_path: Path, run: Runner) -> None:
    repo = repo_of(hub_env)
    mirror_dest = tmp_path / "cache" / "mirror"
    args = fill_args(mirror_dest, source=f"{hub_env.url}/{REPO}")
    code, _, err = run(args)
    assert code == 0, err
    assert manifests.read(mirror_dest) is not None

    # The mirror's copy is a directory source now (what a pvc:// claim looks like).
    local_dest = tmp_path / "cache" / "local"
    code, _, err = run(fill_args(local_dest, source=str(mirror_dest)))
    assert code == 0, err
    found = manifests.read(local_dest)
    assert found is not None
    assert {f.path: f.sha256 for f in found.files} == {p: f.sha256 for p, f in repo.files.items()}


@pytest.mark.parametrize("extra", [(), ("--segment-mib", "1")], ids=["one-stream", "segments"])
def test_killed_fill_resumes_and_refetches_little(
    hub: StubHub, tmp_path: Path, extra: tuple[str, ...]
) -> None:
    repo = repo_of(hub)
    total = repo.total_bytes
    hub.rate = total / 2.0  # about two seconds for the whole fill
    dest = dest_in(tmp_path)
    first = start_fill(dest, hub, *extra)
    try:
        wait_for(
            lambda: hub.bytes_served() >= total // 2,
            timeout=20,
            interval=0.01,
            what="the stub hub to serve half the bytes",
        )
    finally:
        first.kill()
        first.communicate()
    served_before = hub.bytes_served()
    assert served_before < total
    assert not dest.exists()  # a killed fill never reads as ready
    hub.rate = None
    second = start_fill(dest, hub, *extra)
    _, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert_ready(dest, repo)
    refetched = hub.bytes_served() - total
    print(f"served {served_before} of {total} bytes before the kill; {refetched} fetched twice")
    assert refetched <= total // 100 + MiB, f"{refetched} bytes fetched twice"


def test_two_fillers_never_race(hub: StubHub, tmp_path: Path) -> None:
    repo = repo_of(hub)
    hub.rate = repo.total_bytes / 2.0
    dest = dest_in(tmp_path)
    first = start_fill(dest, hub)
    waiter: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: hub.bytes_served() > 0, timeout=20, interval=0.01, what="a fill")
        impatient = subprocess.run(
            fill_command(dest, "--lock-timeout", "0"),
            env=subprocess_env(hub),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert impatient.returncode == ExitCode.LOCKED
        assert "locked: another filler" in impatient.stderr
        waiter = start_fill(dest, hub)  # waits for the lock, then finds the fill done
        assert first.poll() is None
        _, err = first.communicate(timeout=30)
        assert first.returncode == 0, err
        _, err = waiter.communicate(timeout=30)
        assert waiter.returncode == 0, err
        assert "filled by another filler" in err
    finally:
        for proc in (first, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert hub.bytes_served() == repo.total_bytes  # the waiter downloaded nothing
    assert_ready(dest, repo)

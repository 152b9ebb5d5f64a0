"""`cachefill --verify-checksums`: a ready directory is hashed again and repaired in place.

Each test fills DEST from the stub hub first (in this process, as in
test_cachefill_fill.py), damages it on disk, then runs the fill again with the flag.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest

from mistral_operator.cachefill import manifest as manifests
from mistral_operator.cachefill import space
from mistral_operator.cachefill.errors import ChecksumMismatchError, ExitCode
from mistral_operator.cachefill.layout import Layout
from mistral_operator.cachefill.lock import try_lock
from mistral_operator.cachefill.manifest import Manifest
from mistral_operator.cachefill.progress import Counter, Reporter, parse_line
from mistral_operator.cachefill.result import MAX_BYTES, FillResult, parse_result
from mistral_operator.cachefill.scrub import check_against_manifest
from mistral_operator.cachefill.verify import FileSpec
from tests.support.stub_hub import StubHub, StubRepo
from tests.unit.cachefill_fixtures import (
    REPO,
    SHARD,
    Runner,
    dest_in,
    fill_args,
    hub_env_fixture,  # noqa: F401 (a fixture: pytest finds it here)
    hub_fixture,  # noqa: F401 (a fixture: pytest finds it here)
    repo_of,
    run_fixture,  # noqa: F401 (a fixture: pytest finds it here)
    weights,
)

VERIFY = "--verify-checksums"
SHARD_2 = "model-00002-of-00002.safetensors"
TOKENIZER = "tokenizer/tokenizer.json"


def filled(hub: StubHub, tmp_path: Path, run: Runner) -> Path:
    """DEST, filled from the hub and ready."""
    dest = dest_in(tmp_path)
    code, _, err = run(fill_args(dest))
    assert code == 0, err
    return dest


def flip_byte(path: Path, offset: int) -> None:
    """Damage a file in place (same inode, same size), as a bad sector or a stray write."""
    with path.open("r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0xFF]))


def inodes(dest: Path) -> dict[str, int]:
    return {p.relative_to(dest).as_posix(): p.stat().st_ino for p in dest.rglob("*") if p.is_file()}


def assert_files(dest: Path, repo: StubRepo) -> None:
    """DEST holds the repository's files, byte for byte, under a manifest of its commit."""
    found = manifests.read(dest)
    assert found is not None
    assert found.commit == repo.commit
    assert {f.path for f in found.files} == set(repo.files)
    for f in found.files:
        assert (dest / f.path).read_bytes() == repo.files[f.path].data, f.path
        assert f.sha256 == repo.files[f.path].sha256
    assert [p.name for p in dest.parent.iterdir() if ".tmp-" in p.name] == []


def logged_result(log: Path) -> FillResult:
    parsed = parse_result(log.read_text())
    assert parsed is not None
    return parsed


def phases(out: str) -> list[str]:
    return [str(p["phase"]) for line in out.splitlines() if (p := parse_line(line))]


def served_now(hub: StubHub) -> dict[str, int]:
    return dict(hub.served)


def test_an_intact_directory_is_hashed_without_a_request(
    hub_env: StubHub, tmp_path: Path, run: Runner
) -> None:
    dest = filled(hub_env, tmp_path, run)
    repo = repo_of(hub_env)
    before, requests = inodes(dest), len(hub_env.requests)
    log = tmp_path / "termination-log"
    code, out, err = run(fill_args(dest, VERIFY, "--termination-log", str(log)))
    assert code == 0, err
    assert len(hub_env.requests) == requests  # not even the revision is resolved
    assert f"{len(repo.files)} files checked" in err
    assert "0 damaged" in err
    assert inodes(dest) == before
    result = logged_result(log)
    assert (result.ready, result.verified, result.repaired) == (True, True, ())
    assert result.fetched_bytes == 0
    assert json.loads(log.read_text())["repaired"] == []
    last = parse_line(out.splitlines()[-1])
    assert last is not None
    assert last["phase"] == "done"
    assert last["doneBytes"] == last["totalBytes"] == repo.total_bytes


@pytest.mark.parametrize("segments", [[], ["--segment-mib", "1"]], ids=["stream", "segments"])
def test_a_flipped_byte_is_found_and_only_that_file_fetched(
    hub_env: StubHub, tmp_path: Path, run: Runner, segments: list[str]
) -> None:
    dest = filled(hub_env, tmp_path, run)
    repo = repo_of(hub_env)
    size = len(repo.files[SHARD].data)
    flip_byte(dest / SHARD, size // 2)
    before, served = inodes(dest), served_now(hub_env)

    # Without the flag the sizes match: ready, and the byte stays wrong.
    code, _, err = run(fill_args(dest))
    assert code == 0, err
    assert (dest / SHARD).read_bytes() != repo.files[SHARD].data
    assert served_now(hub_env) == served

    log = tmp_path / "termination-log"
    code, out, err = run(fill_args(dest, VERIFY, *segments, "--termination-log", str(log)))
    assert code == 0, err
    assert_files(dest, repo)
    warning = next(line for line in err.splitlines() if f"{SHARD}: sha256 " in line)
    assert "WARNING" in warning
    assert f"expected {repo.files[SHARD].sha256}" in warning
    assert hub_env.served[f"{REPO}/{SHARD}"] - served[f"{REPO}/{SHARD}"] == size
    assert hub_env.bytes_served() - sum(served.values()) == size  # nothing else
    after = inodes(dest)
    assert after[SHARD] != before[SHARD]
    assert {p: n for p, n in after.items() if p != SHARD} == {
        p: n for p, n in before.items() if p != SHARD
    }
    result = logged_result(log)
    assert (result.verified, result.repaired, result.fetched_bytes) == (True, (SHARD,), size)
    seen = phases(out)
    assert seen[-1] == "done"
    assert "done" not in seen[:-1]  # the verify pass leaves the last line to the repair


def test_a_missing_and_a_truncated_file_are_fetched_again(
    hub_env: StubHub, tmp_path: Path, run: Runner
) -> None:
    dest = filled(hub_env, tmp_path, run)
    repo = repo_of(hub_env)
    (dest / TOKENIZER).unlink()
    (dest / TOKENIZER).parent.rmdir()  # its folder too: the repair makes it again
    with (dest / SHARD_2).open("r+b") as file:
        file.truncate(1000)
    served = served_now(hub_env)
    code, _, err = run(fill_args(dest, VERIFY))
    assert code == 0, err
    assert f"{TOKENIZER}: missing" in err
    assert f"{SHARD_2}: size 1000 bytes, expected {len(repo.files[SHARD_2].data)}" in err
    assert_files(dest, repo)
    for name in (TOKENIZER, SHARD_2):
        key = f"{REPO}/{name}"
        assert hub_env.served[key] - served[key] == len(repo.files[name].data)
    assert hub_env.served[f"{REPO}/{SHARD}"] == served[f"{REPO}/{SHARD}"]


def test_a_copy_that_does_not_verify_fails_and_loses_nothing(
    hub_env: StubHub, tmp_path: Path, run: Runner
) -> None:
    dest = filled(hub_env, tmp_path, run)
    repo = repo_of(hub_env)
    flip_byte(dest / SHARD, 5)
    damaged = (dest / SHARD).read_bytes()
    before = inodes(dest)
    hub_env.corrupt(REPO, SHARD, offset=7)
    log = tmp_path / "termination-log"
    code, _, err = run(fill_args(dest, VERIFY, "--termination-log", str(log)))
    assert code == ExitCode.CHECKSUM_MISMATCH
    assert f"checksum mismatch in {SHARD}" in err
    assert logged_result(log).file == SHARD
    assert manifests.read(dest) is not None
    assert inodes(dest) == before
    assert (dest / SHARD).read_bytes() == damaged  # left as it was, not made worse
    for name, f in repo.files.items():
        if name != SHARD:
            assert (dest / name).read_bytes() == f.data

    hub_env.heal(REPO, SHARD)  # the next run repairs it
    code, _, err = run(fill_args(dest, VERIFY))
    assert code == 0, err
    assert_files(dest, repo)


def test_a_moved_revision_is_filled_anew(hub_env: StubHub, tmp_path: Path, run: Runner) -> None:
    dest = filled(hub_env, tmp_path, run)
    old = repo_of(hub_env)
    files = weights()
    files["config.json"] = b'{"model_type": "mistral", "moved": true}\n'
    new = hub_env.add_repo(REPO, files)  # main points at a new commit now
    assert new.commit != old.commit

    # Intact: nothing is asked, the directory stays at the commit it was filled with.
    requests = len(hub_env.requests)
    code, _, err = run(fill_args(dest, VERIFY))
    assert code == 0, err
    assert len(hub_env.requests) == requests
    assert_files(dest, old)

    flip_byte(dest / SHARD, 1)
    log = tmp_path / "termination-log"
    code, _, err = run(fill_args(dest, VERIFY, "--termination-log", str(log)))
    assert code == 0, err
    assert "filling it anew" in err
    assert_files(dest, new)
    result = logged_result(log)
    assert (result.commit, result.verified, result.repaired) == (new.commit, True, ())
    assert result.fetched_bytes == new.total_bytes


def test_a_held_lock_exits_locked(hub_env: StubHub, tmp_path: Path, run: Runner) -> None:
    dest = filled(hub_env, tmp_path, run)
    flip_byte(dest / SHARD, 3)
    fd = try_lock(Layout(dest).lock)  # another filler's, as far as this run can tell
    assert fd is not None
    try:
        code, _, err = run(fill_args(dest, VERIFY, "--lock-timeout", "0"))
    finally:
        os.close(fd)
    assert code == ExitCode.LOCKED
    assert "locked: another filler" in err
    assert "checked" not in err  # nothing was hashed without the lock


def test_too_little_room_for_the_copies_is_refused(
    hub_env: StubHub, tmp_path: Path, run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = filled(hub_env, tmp_path, run)
    size = len(repo_of(hub_env).files[SHARD].data)
    flip_byte(dest / SHARD, 3)
    monkeypatch.setattr(space, "free_bytes", lambda path: size - 1)
    served = hub_env.bytes_served()
    code, _, err = run(fill_args(dest, VERIFY))
    assert code == ExitCode.DISK_FULL
    assert "disk full" in err
    assert hub_env.bytes_served() == served
    assert manifests.read(dest) is not None


def test_a_directory_not_ready_is_filled_as_without_the_flag(
    hub_env: StubHub, tmp_path: Path, run: Runner
) -> None:
    dest = dest_in(tmp_path)
    log = tmp_path / "termination-log"
    code, _, err = run(fill_args(dest, VERIFY, "--termination-log", str(log)))
    assert code == 0, err
    assert_files(dest, repo_of(hub_env))
    result = logged_result(log)
    assert (result.verified, result.repaired) == (False, ())
    assert "verified" not in json.loads(log.read_text())  # as a result without the flag


def test_a_directory_source_is_checked_against_the_manifest(tmp_path: Path, run: Runner) -> None:
    """A directory declares no hashes: the copy must have the manifest's sha256."""
    source = tmp_path / "source"
    for name, data in weights().items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    dest = tmp_path / "cache" / "local"
    assert run(fill_args(dest, source=str(source)))[0] == 0
    flip_byte(dest / SHARD, 9)
    code, _, err = run(fill_args(dest, VERIFY, source=str(source)))
    assert code == 0, err
    assert (dest / SHARD).read_bytes() == weights()[SHARD]

    # The source's copy changed since the fill (same size): it is not the manifest's.
    flip_byte(source / SHARD, 11)
    flip_byte(dest / SHARD, 9)
    code, _, err = run(fill_args(dest, VERIFY, source=str(source)))
    assert code == ExitCode.CHECKSUM_MISMATCH
    assert f"checksum mismatch in {SHARD}" in err
    assert manifests.read(dest) is not None


def test_a_copy_that_is_not_the_manifests_bytes_is_refused(tmp_path: Path) -> None:
    """A source declaring another sha256 at the same commit: the copy goes, nothing moves."""
    manifest = Manifest("src", "main", "c0ffee", (FileSpec("a.json", 2, "1" * 64),))
    (tmp_path / "a.json").write_bytes(b"{}")
    with pytest.raises(ChecksumMismatchError, match=r"a\.json: sha256 2+, the manifest says 1+"):
        check_against_manifest(manifest, {"a.json": "2" * 64}, tmp_path)
    assert not (tmp_path / "a.json").exists()  # the next run fetches it again
    check_against_manifest(manifest, {"a.json": "1" * 64}, tmp_path)


def test_the_verify_phase_leaves_the_last_line_to_its_caller() -> None:
    counter = Counter(total=10, files_total=1)
    out = io.StringIO()
    with Reporter(counter, 0.01, out, phase="verify", end_phase=None):
        counter.add(4)
        time.sleep(0.1)
    lines = [parse_line(line) for line in out.getvalue().splitlines()]
    assert lines
    assert {line["phase"] for line in lines if line} == {"verify"}
    assert lines[-1] is not None
    assert lines[-1]["doneBytes"] == 4


def test_help_lists_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from mistral_operator.cli import main  # noqa: PLC0415 - the operator's own entry point

    with pytest.raises(SystemExit):
        main(["cachefill", "--help"])
    assert VERIFY in capsys.readouterr().out


# -- the result's new fields ----------------------------------------------------------


def ready(*, verified: bool = False, repaired: tuple[str, ...] = ()) -> FillResult:
    return FillResult.succeeded(
        commit="a" * 40,
        total_bytes=100,
        files=2,
        fetched_bytes=50,
        seconds=2.0,
        disk_free_bytes=7,
        disk_total_bytes=9,
        verified=verified,
        repaired=repaired,
    )


def test_repaired_and_verified_round_trip() -> None:
    repaired = ready(verified=True, repaired=("a.safetensors", "b/c.json"))
    text = repaired.render()
    assert json.loads(text)["repaired"] == ["a.safetensors", "b/c.json"]
    assert json.loads(text)["verified"] is True
    assert parse_result(text) == repaired

    plain = ready()
    assert parse_result(plain.render()) == plain
    assert "verified" not in json.loads(plain.render())
    older = '{"result":"Ready","commit":"abc","totalBytes":1,"files":1}'
    found = parse_result(older)
    assert found is not None
    assert (found.verified, found.repaired, found.repaired_truncated) == (False, (), False)


@pytest.mark.parametrize(
    "text",
    [
        '{"result":"Ready","commit":"abc","verified":"yes"}',
        '{"result":"Ready","commit":"abc","repaired":"a.json"}',
        '{"result":"Ready","commit":"abc","repaired":[1]}',
    ],
)
def test_malformed_verification_fields_are_not_ours(text: str) -> None:
    assert parse_result(text) is None


def test_a_long_repaired_list_is_cut_to_the_kubelets_limit() -> None:
    paths = tuple(f"shards/model-{i:05d}-of-01000.safetensors" for i in range(1000))
    text = ready(verified=True, repaired=paths).render()
    assert len(text.encode()) <= MAX_BYTES
    found = parse_result(text)
    assert found is not None
    assert found.verified
    assert found.repaired_truncated
    assert 0 < len(found.repaired) < len(paths)
    assert found.repaired == paths[: len(found.repaired)]  # the first ones, whole

    # One long name is cut to SIDE_CAP characters (escaped, 6 bytes each), not dropped.
    text = ready(verified=True, repaired=("\u00e9" * 5000,)).render()
    assert len(text) <= MAX_BYTES
    cut = parse_result(text)
    assert cut is not None
    assert (cut.repaired, cut.repaired_truncated) == (("\u00e9" * 512 + "...",), False)

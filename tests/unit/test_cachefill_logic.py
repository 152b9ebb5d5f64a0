"""The pure parts of cachefill: hashes, sources, exit codes, progress, manifest, layout."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import pytest

from mistral_operator.cachefill import manifest as manifests
from mistral_operator.cachefill.errors import (
    AuthRefusedError,
    ChecksumMismatchError,
    DiskFullError,
    ExitCode,
    NotFoundError,
    UsageError,
    classify,
    status_error,
)
from mistral_operator.cachefill.hub import backoff
from mistral_operator.cachefill.layout import Layout, name_component, safe_relative
from mistral_operator.cachefill.progress import (
    PREFIX,
    human_bytes,
    human_seconds,
    parse_line,
    snapshot,
)
from mistral_operator.cachefill.sources import (
    DEFAULT_ENDPOINT,
    HubSource,
    LocalSource,
    parse_endpoints,
    parse_source,
)
from mistral_operator.cachefill.space import check_fits
from mistral_operator.cachefill.verify import Digest, FileSpec, parse_etag, spec_from_etag

# `printf 'hello\n' | git hash-object --stdin`
HELLO_BLOB = "ce013625030ba8dba906f756967f9e9ca394464a"


def test_git_blob_sha1_matches_git() -> None:
    digest = Digest(FileSpec("a.txt", 6, git_sha1=HELLO_BLOB))
    digest.update(b"hel")
    digest.update(b"lo\n")
    assert digest.mismatch() is None
    assert digest.sha256() == hashlib.sha256(b"hello\n").hexdigest()


def test_digest_names_what_differs() -> None:
    good = hashlib.sha256(b"weights").hexdigest()
    short = Digest(FileSpec("w", 7, sha256=good))
    short.update(b"weight")
    assert short.mismatch() == "size 6 bytes, expected 7"
    wrong = Digest(FileSpec("w", 7, sha256=good))
    wrong.update(b"weightz")
    assert (wrong.mismatch() or "").startswith("sha256 ")
    blob = Digest(FileSpec("a.txt", 6, git_sha1=HELLO_BLOB))
    blob.update(b"hellO\n")
    assert (blob.mismatch() or "").startswith("git blob sha1 ")
    blob.reset()
    blob.update(b"hello\n")
    assert blob.mismatch() is None


def test_etags_become_the_right_hash() -> None:
    sha256 = "a" * 64
    assert parse_etag(f'W/"{sha256.upper()}"') == sha256
    assert parse_etag('"not-a-digest"') is None
    assert spec_from_etag("m.safetensors", 5, f'"{sha256}"').sha256 == sha256
    assert spec_from_etag("c.json", 5, f'"{HELLO_BLOB}"').git_sha1 == HELLO_BLOB
    assert spec_from_etag("x", 5, None) == FileSpec("x", 5)


def test_sources() -> None:
    assert parse_source("hf://org/repo", None) == HubSource("org/repo", (DEFAULT_ENDPOINT,), "main")
    assert parse_source("hf://org/repo@v1", None).revision == "v1"
    assert parse_source("hf://org/repo@v1", "v1").revision == "v1"
    with pytest.raises(UsageError, match="--revision"):
        parse_source("hf://org/repo@v1", "v2")
    mirror = parse_source("https://mirror.example/hf/org/repo", "abc")
    assert mirror == HubSource("org/repo", ("https://mirror.example/hf",), "abc")
    assert parse_source("pvc://weights/models/x", None, pvc_mount="/mnt/src") == LocalSource(
        "/mnt/src/weights/models/x", "main"
    )
    with pytest.raises(UsageError, match="s3://"):
        parse_source("s3://bucket/x", None)
    with pytest.raises(UsageError):
        parse_source("hf://just-a-name", None)


def test_endpoints_list_for_failover() -> None:
    assert parse_endpoints(None) == (DEFAULT_ENDPOINT,)
    assert parse_endpoints(" http://a/ , https://b ") == ("http://a", "https://b")
    with pytest.raises(UsageError):
        parse_endpoints("ftp://a")


def test_exit_codes_are_distinct_and_mapped() -> None:
    assert len({int(c) for c in ExitCode}) == len(ExitCode)
    assert classify(ChecksumMismatchError("m.safetensors", "x")) == (
        ExitCode.CHECKSUM_MISMATCH,
        "checksum mismatch in m.safetensors: x",
    )
    code, message = classify(OSError(errno.ENOSPC, "No space left on device", "/c/k.tmp/a"))
    assert code == ExitCode.DISK_FULL
    assert "/c/k.tmp/a" in message
    assert classify(ValueError("boom"))[0] == ExitCode.UNEXPECTED


def test_http_statuses() -> None:
    assert isinstance(status_error(401, "r", token_sent=False), AuthRefusedError)
    assert isinstance(status_error(403, "r", token_sent=True), AuthRefusedError)
    assert isinstance(status_error(404, "r", token_sent=True), NotFoundError)
    # The Hub hides a missing (or private) repository behind 401 plus an error code.
    hidden = status_error(401, "r", token_sent=False, error_code="RepoNotFound")
    assert isinstance(hidden, NotFoundError)
    assert "no HF_TOKEN" in str(hidden)


def test_backoff_doubles_and_caps() -> None:
    assert [backoff(n, 1.0) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert backoff(20, 1.0) == 30.0


def test_progress_maths() -> None:
    snap = snapshot(
        phase="download",
        done=60,
        total=100,
        files_done=1,
        files_total=3,
        done_at_start=20,
        elapsed=4.0,
    )
    assert snap.rate == 10.0  # only this run's 40 bytes count
    assert snap.eta == 4.0
    line = snap.line()
    assert line.startswith(PREFIX)
    assert parse_line(line) == {
        "phase": "download",
        "doneBytes": 60,
        "totalBytes": 100,
        "filesDone": 1,
        "filesTotal": 3,
        "bytesPerSecond": 10.0,
        "etaSeconds": 4.0,
    }
    assert parse_line("other output") is None
    idle = snapshot(
        phase="download", done=0, total=9, files_done=0, files_total=1, done_at_start=0, elapsed=0
    )
    assert idle.rate is None
    assert idle.eta is None
    assert "ETA" not in idle.message()


def test_human_units() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(3 * 1024**3) == "3.0 GiB"
    assert human_seconds(59) == "59s"
    assert human_seconds(125) == "2m05s"
    assert human_seconds(7260) == "2h01m"


def test_free_space_check() -> None:
    check_fits(10, 10, "/cache")
    with pytest.raises(DiskFullError, match="disk full"):
        check_fits(11, 10, "/cache")


def test_manifest_round_trip_and_size_check(tmp_path: Path) -> None:
    specs = [FileSpec("b/w.safetensors", 3, sha256="1" * 64), FileSpec("a.json", 2, git_sha1="2")]
    built = manifests.build(
        "hf://o/r", "main", "c" * 40, specs, {"b/w.safetensors": "1" * 64, "a.json": "3" * 64}
    )
    assert [f.path for f in built.files] == ["a.json", "b/w.safetensors"]
    assert built.total_bytes == 5
    manifests.write(tmp_path, built)
    assert manifests.read(tmp_path) == built
    assert built.matches("hf://o/r", "main")
    assert not built.matches("hf://o/r", "v2")
    (tmp_path / "a.json").write_bytes(b"xy")
    assert manifests.size_problems(built, tmp_path) == ["b/w.safetensors: missing"]
    (tmp_path / manifests.MANIFEST_NAME).write_text("{not json")
    assert manifests.read(tmp_path) is None


def test_layout_beside_the_destination(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "k1")
    assert layout.lock == tmp_path / "k1.lock"
    assert layout.temp("abc") == tmp_path / "k1.tmp-abc"
    assert name_component("refs/pr/1") == "refs_pr_1"
    (tmp_path / "k1.tmp-old").mkdir()
    (tmp_path / "k1.tmp-abc").mkdir()
    assert layout.old_temps("abc") == [tmp_path / "k1.tmp-old"]
    assert safe_relative("a/b.json") == "a/b.json"
    for bad in ("../x", "/etc/passwd", "a//b", "a/./b", ""):
        with pytest.raises(ValueError, match="unsafe"):
            safe_relative(bad)


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    from mistral_operator.cli import main  # noqa: PLC0415 - the operator's own entry point

    with pytest.raises(SystemExit) as exit_info:
        main(["cachefill", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for code in ExitCode:
        if code != ExitCode.OK:
            assert f"  {int(code)}  " in text
    assert "HF_ENDPOINT" in text

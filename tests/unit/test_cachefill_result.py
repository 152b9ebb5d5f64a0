"""The termination-log result of `cachefill`: written at exit, parsed by the operator.

The runs go against the stub hub, in this process, as in test_cachefill_fill.py; the
parser and the 4096-byte limit are also checked on their own.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mistral_operator.cachefill import codes, result, space
from mistral_operator.cachefill.codes import ExitCode
from mistral_operator.cachefill.hub import HubReader
from mistral_operator.cachefill.layout import Layout
from mistral_operator.cachefill.lock import try_lock
from mistral_operator.cachefill.remote import Revision
from mistral_operator.cachefill.result import (
    MAX_BYTES,
    FillResult,
    parse_clean_result,
    parse_result,
)
from tests.support.stub_hub import StubHub
from tests.unit.cachefill_fixtures import (
    REPO,
    Runner,
    dest_in,
    fill_args,
    hub_env_fixture,  # noqa: F401 (a fixture: pytest finds it here)
    hub_fixture,  # noqa: F401 (a fixture: pytest finds it here)
    killed_fill,
    refused_token_fixture,  # noqa: F401 (a fixture: pytest finds it here)
    repo_of,
    run_fixture,  # noqa: F401 (a fixture: pytest finds it here)
)

READY_KEYS = {
    "result",
    "commit",
    "totalBytes",
    "files",
    "fetchedBytes",
    "seconds",
    "bytesPerSecond",
    "diskFreeBytes",
    "diskTotalBytes",
}
FAILED_KEYS = {
    "result",
    "exitCode",
    "reason",
    "message",
    "doneBytes",
    "totalBytes",
    "diskFreeBytes",
    "diskTotalBytes",
}


class Logged:
    """One run with --termination-log: its exit code, stderr and the file's result."""

    def __init__(self, run: Runner, log: Path, args: list[str]) -> None:
        log.unlink(missing_ok=True)
        self.code, _, self.err = run([*args, "--termination-log", str(log)])
        self.text = log.read_text()
        self.data: dict[str, Any] = json.loads(self.text)
        parsed = parse_result(self.text)
        assert parsed is not None, self.text
        self.result = parsed

    def message_line(self) -> str:
        """The one-line stderr message, without its prefix."""
        lines = [line for line in self.err.splitlines() if line.startswith("cachefill: ")]
        return lines[-1].removeprefix("cachefill: ")


def assert_compact(text: str) -> None:
    assert len(text.encode()) <= MAX_BYTES
    assert "\n" not in text
    assert ", " not in text  # compact separators; messages here hold no ", "
    assert text == result.render(json.loads(text))


def assert_failed(logged: Logged, code: ExitCode, *, cut: bool = False) -> FillResult:
    assert logged.code == code, logged.err
    assert set(logged.data) - {"file"} == FAILED_KEYS
    found = logged.result
    assert not found.ready
    assert (found.result, found.exit_code, found.reason) == ("Failed", int(code), code.reason)
    assert found.code == code
    if not cut:
        assert found.message == logged.message_line()
    assert isinstance(found.disk_free_bytes, int)
    assert isinstance(found.disk_total_bytes, int)
    return found


def test_ready_then_ready_again_with_nothing_fetched(
    hub_env: StubHub, tmp_path: Path, run: Runner
) -> None:
    repo = repo_of(hub_env)
    log = tmp_path / "termination-log"
    dest = dest_in(tmp_path)
    first = Logged(run, log, fill_args(dest))
    assert first.code == 0, first.err
    assert set(first.data) == READY_KEYS
    assert_compact(first.text)
    found = first.result
    assert found.ready
    assert found.code == ExitCode.OK
    assert found.commit == repo.commit
    assert re.fullmatch(r"[0-9a-f]{40}", found.commit or "")
    assert found.total_bytes == repo.total_bytes
    assert found.files == len(repo.files)
    assert found.fetched_bytes == repo.total_bytes == hub_env.bytes_served()
    assert found.seconds is not None
    assert found.seconds > 0
    assert found.bytes_per_second is not None
    assert found.bytes_per_second > 0
    assert found.disk_free_bytes is not None
    assert found.disk_total_bytes is not None
    assert 0 < found.disk_free_bytes <= found.disk_total_bytes

    second = Logged(run, log, fill_args(dest))
    assert second.code == 0, second.err
    assert second.result.ready
    assert second.result.commit == repo.commit
    assert second.result.total_bytes == repo.total_bytes
    assert second.result.fetched_bytes == 0
    assert second.data["bytesPerSecond"] is None
    assert hub_env.bytes_served() == repo.total_bytes


def test_a_resumed_fill_reports_only_what_it_fetched(
    hub_env: StubHub, tmp_path: Path, run: Runner
) -> None:
    repo = repo_of(hub_env)
    logged = Logged(run, tmp_path / "log", fill_args(killed_fill(hub_env, tmp_path, kept=1000)))
    assert logged.code == 0, logged.err
    assert logged.result.fetched_bytes == repo.total_bytes - 1000 == hub_env.bytes_served()


@pytest.mark.parametrize("name", ["model-00002-of-00002.safetensors", "config.json"])
def test_checksum_mismatch_names_the_file(
    hub_env: StubHub, tmp_path: Path, run: Runner, name: str
) -> None:
    hub_env.corrupt(REPO, name, offset=3)
    logged = Logged(run, tmp_path / "log", fill_args(dest_in(tmp_path)))
    found = assert_failed(logged, ExitCode.CHECKSUM_MISMATCH)
    assert found.file == name
    assert found.message.startswith(f"checksum mismatch in {name}")
    assert found.total_bytes == repo_of(hub_env).total_bytes
    assert found.done_bytes is not None
    assert 0 <= found.done_bytes < repo_of(hub_env).total_bytes


def test_repository_not_found_names_no_file(hub_env: StubHub, tmp_path: Path, run: Runner) -> None:
    args = fill_args(dest_in(tmp_path), source="hf://mistral-sim/Missing")
    found = assert_failed(Logged(run, tmp_path / "log", args), ExitCode.NOT_FOUND)
    assert found.file is None
    assert found.total_bytes is None  # it failed before it knew the revision's size
    assert found.done_bytes == 0


def test_a_file_the_source_lost_is_named(
    hub_env: StubHub, tmp_path: Path, run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listed by the revision API, then 404 (EntryNotFound) when fetched."""
    name = "tokenizer/tokenizer.json"
    resolve = HubReader.resolve

    def resolve_then_lose(reader: HubReader) -> Revision:
        revision = resolve(reader)
        del repo_of(hub_env).files[name]
        return revision

    monkeypatch.setattr(HubReader, "resolve", resolve_then_lose)
    found = assert_failed(
        Logged(run, tmp_path / "log", fill_args(dest_in(tmp_path))), ExitCode.NOT_FOUND
    )
    assert found.file == name
    assert "EntryNotFound" in found.message


def test_auth_refused(tmp_path: Path, run: Runner, refused_token: str | None) -> None:
    found = assert_failed(
        Logged(run, tmp_path / "log", fill_args(dest_in(tmp_path))), ExitCode.AUTH_REFUSED
    )
    assert found.message.startswith("auth refused")
    assert found.file is None


def test_disk_full_up_front_reports_the_free_space_seen(
    hub_env: StubHub, tmp_path: Path, run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    total = repo_of(hub_env).total_bytes
    monkeypatch.setattr(space, "usage", lambda path: space.DiskUsage(total - 1, 10 * total))
    found = assert_failed(
        Logged(run, tmp_path / "log", fill_args(dest_in(tmp_path))), ExitCode.DISK_FULL
    )
    assert (found.disk_free_bytes, found.disk_total_bytes) == (total - 1, 10 * total)
    assert (found.done_bytes, found.total_bytes) == (0, total)
    assert hub_env.bytes_served() == 0


def test_disk_full_while_writing_names_the_file(
    hub_env: StubHub, tmp_path: Path, run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def write(fd: int, data: bytes | memoryview) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("model-00001-of-00002.safetensors.part"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    found = assert_failed(
        Logged(run, tmp_path / "log", fill_args(dest_in(tmp_path), "--parallel", "1")),
        ExitCode.DISK_FULL,
    )
    assert found.file == "model-00001-of-00002.safetensors"
    assert found.message.startswith("disk full while writing")


def test_locked_and_usage_errors(hub_env: StubHub, tmp_path: Path, run: Runner) -> None:
    dest = dest_in(tmp_path)
    dest.parent.mkdir(parents=True)
    fd = try_lock(Layout(dest).lock)
    assert fd is not None
    try:
        args = fill_args(dest, "--lock-timeout", "0")
        found = assert_failed(Logged(run, tmp_path / "log", args), ExitCode.LOCKED)
        assert found.message.startswith("locked: another filler")
    finally:
        os.close(fd)
    args = fill_args(dest, "--parallel", "0")
    found = assert_failed(Logged(run, tmp_path / "log", args), ExitCode.USAGE)
    assert found.total_bytes is None


def test_a_long_message_is_cut_to_the_kubelets_limit(
    hub_env: StubHub, tmp_path: Path, run: Runner
) -> None:
    revision = "r" * 6000  # a 404 message quoting it is longer than the file may be
    args = fill_args(dest_in(tmp_path, revision), "--revision", revision)
    logged = Logged(run, tmp_path / "log", args)
    found = assert_failed(logged, ExitCode.NOT_FOUND, cut=True)
    assert len(logged.text.encode()) <= MAX_BYTES
    assert len(logged.text.encode()) > MAX_BYTES - 10  # cut, not dropped
    assert found.message.endswith("...")
    assert logged.message_line().startswith(found.message.removesuffix("..."))


def test_no_termination_log_writes_nothing_and_a_bad_path_only_warns(
    hub_env: StubHub, tmp_path: Path, run: Runner
) -> None:
    dest = dest_in(tmp_path)
    code, _, err = run(fill_args(dest))
    assert code == 0, err
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]
    missing = tmp_path / "no-such-dir" / "log"
    code, _, err = run([*fill_args(dest), "--termination-log", str(missing)])
    assert code == 0, err
    assert "cannot write the termination log" in err


# -- the parser and the limit on their own ---------------------------------------


def test_render_cuts_any_string_and_stays_valid_json() -> None:
    nasty = '"\\\n\t\u00e9\u2603\U0001f600' * 800  # escapes that grow when rendered
    failed = FillResult.failed(
        ExitCode.CHECKSUM_MISMATCH,
        f"checksum mismatch in x: {nasty}",
        file="shards/" + "f" * 5000,
        done_bytes=5,
        total_bytes=10,
        disk_free_bytes=1,
        disk_total_bytes=2,
    )
    text = failed.render()
    assert len(text.encode()) <= MAX_BYTES
    parsed = parse_result(text)
    assert parsed is not None
    assert parsed.reason == "ChecksumMismatch"
    assert parsed.exit_code == 6
    assert parsed.message.startswith("checksum mismatch in x: ")
    assert (parsed.done_bytes, parsed.total_bytes) == (5, 10)
    assert "\n" not in parsed.message  # one line: the newlines were folded before cutting

    short = FillResult.failed(ExitCode.NOT_FOUND, "not found: a\nb", file="c.json")
    assert parse_result(short.render()) == FillResult.failed(
        ExitCode.NOT_FOUND, "not found: a b", file="c.json"
    )


def test_ready_round_trip() -> None:
    ready = FillResult.succeeded(
        commit="a" * 40,
        total_bytes=100,
        files=2,
        fetched_bytes=50,
        seconds=2.0,
        disk_free_bytes=7,
        disk_total_bytes=9,
    )
    assert ready.bytes_per_second == 25.0
    assert parse_result(ready.render()) == ready
    assert json.loads(ready.render())["result"] == "Ready"
    nothing = FillResult.succeeded(
        commit="a" * 40,
        total_bytes=100,
        files=2,
        fetched_bytes=0,
        seconds=0.01,
        disk_free_bytes=7,
        disk_total_bytes=9,
    )
    assert nothing.bytes_per_second is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "cachefill: not found: mistral-sim/Missing@main (404 RepoNotFound)",
        "2024-01-01 cachefill INFO progress\n{",
        "[1, 2]",
        '{"result": "Ready"}',  # no commit
        '{"result": "Failed", "exitCode": "4", "reason": "NotFound"}',
        '{"result": "Failed", "exitCode": true, "reason": "NotFound"}',
        '{"result": "Ready", "commit": "abc", "totalBytes": "12"}',
        '{"result": "Cleaned", "removed": []}',
        '{"result": "Something", "exitCode": 0}',
    ],
)
def test_parse_result_ignores_what_is_not_ours(text: str) -> None:
    assert parse_result(text) is None


def test_parse_result_accepts_what_the_kubelet_keeps() -> None:
    text = '{"result":"Failed","exitCode":7,"reason":"SourceUnreachable","message":"m"}\n'
    found = parse_result(text)
    assert found is not None
    assert found.code == ExitCode.SOURCE_UNREACHABLE
    assert (found.done_bytes, found.total_bytes, found.file) == (None, None, None)
    assert parse_clean_result(text) is None


def test_the_result_module_imports_nothing_heavy() -> None:
    probe = (
        "import sys; import mistral_operator.cachefill.result; "
        "print(sorted(m for m in sys.modules if m.startswith('mistral_operator')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out.replace("'", '"')) == [
        "mistral_operator",
        "mistral_operator.cachefill",
        "mistral_operator.cachefill.codes",
        "mistral_operator.cachefill.result",
    ]


# -- the one table of exit codes ----------------------------------------------------


def test_exit_code_table_is_one_to_one() -> None:
    assert len({c.reason for c in ExitCode}) == len(ExitCode)
    assert [int(c) for c in ExitCode] == list(range(9))
    for member in ExitCode:
        assert codes.from_code(int(member)) is member
        assert codes.from_reason(member.reason) is member
        assert member.help_text
    assert codes.from_code(99) is None
    assert codes.from_reason("Nope") is None
    assert (ExitCode.AUTH_REFUSED.reason, ExitCode.LOCKED.reason) == ("AuthRefused", "Locked")


def test_the_docs_table_matches_the_code() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "cache.md"
    section = doc.read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| `(\w*)` \|", section, flags=re.MULTILINE)
    assert {int(code): reason for code, reason in rows} == {int(c): c.reason for c in ExitCode}, (
        "docs/cache.md's exit code table is out of date"
    )


def test_help_renders_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    from mistral_operator.cli import main  # noqa: PLC0415

    with pytest.raises(SystemExit):
        main(["cachefill", "--help"])
    text = capsys.readouterr().out
    for member in ExitCode:
        assert re.search(rf"^  {int(member)}  {member.reason} +\S", text, flags=re.MULTILINE)
    assert "--termination-log" in text

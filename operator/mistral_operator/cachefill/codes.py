"""Exit codes of `mistral-operator cachefill` and `cacheclean`: the one table.

Each failure a cache-fill Job can meet has its own exit code, so the operator can
tell from the pod's termination state alone whether to retry (unreachable), wait for
a user fix (auth, not found) or pick another node (disk full). Every code has a
reason (the `reason` of the termination-log result, see `result.py`) and a help
line (the `--help` epilog). This module imports nothing heavy: the operator's core
reads results through `result.py`, which uses it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping


class ExitCode(enum.IntEnum):
    """(code, reason, help line) for every way a fill ends."""

    reason: str
    help_text: str

    def __new__(cls, code: int, reason: str, help_text: str) -> ExitCode:
        member = int.__new__(cls, code)
        member._value_ = code
        member.reason = reason
        member.help_text = help_text
        return member

    OK = 0, "Ready", "ready: filled now, or already there with a matching, intact manifest"
    UNEXPECTED = (
        1,
        "Unexpected",
        "unexpected error (a bug, or a local I/O error other than ENOSPC/EDQUOT)",
    )
    USAGE = 2, "UsageError", "usage error (bad arguments, conflicting revisions)"
    AUTH_REFUSED = 3, "AuthRefused", "auth refused (401/403)"
    NOT_FOUND = 4, "NotFound", "not found (404: repository, revision or file)"
    DISK_FULL = (
        5,
        "DiskFull",
        "disk full (ENOSPC or EDQUOT, or the declared size exceeds the free space)",
    )
    CHECKSUM_MISMATCH = 6, "ChecksumMismatch", "checksum mismatch (the file is named)"
    SOURCE_UNREACHABLE = (
        7,
        "SourceUnreachable",
        "source unreachable (connection errors or 5xx after failover and retries)",
    )
    LOCKED = 8, "Locked", "locked (another filler holds DEST and --lock-timeout ran out)"


def from_code(code: int) -> ExitCode | None:
    """The member for an exit status, or None for a status no program of ours uses."""
    return next((member for member in ExitCode if member.value == code), None)


def from_reason(reason: str) -> ExitCode | None:
    return next((member for member in ExitCode if member.reason == reason), None)


def render_help(
    codes: Iterable[ExitCode] = tuple(ExitCode),
    overrides: Mapping[ExitCode, tuple[str, str]] | None = None,
) -> str:
    """The `exit codes:` block of a `--help` epilog, one line per code.

    overrides: (reason, help line) of a code for another program (cacheclean).
    """
    lines = ["exit codes:"]
    for member in codes:
        reason, text = (overrides or {}).get(member, (member.reason, member.help_text))
        lines.append(f"  {member.value}  {reason:<18} {text}")
    return "\n".join(lines) + "\n"

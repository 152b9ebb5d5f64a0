"""Exit codes of `mistral-operator cachefill` and the errors that map to them.

Each failure a cache-fill Job can meet has its own exit code, so the operator can
tell from the pod's termination state alone whether to retry (unreachable), wait for
a user fix (auth, not found) or pick another node (disk full):

    0  the cache directory is ready (filled now, or already there and verified)
    1  an unexpected error (a bug, or a local I/O error other than ENOSPC)
    2  usage error (bad arguments, conflicting revisions)
    3  auth refused: the source answered 401 or 403 (token missing, wrong or not allowed)
    4  not found: the repository, revision or a file does not exist (404)
    5  disk full: ENOSPC while writing, or the declared size exceeds the free space
    6  checksum mismatch: a file's size or hash differs from the source's (file named)
    7  source unreachable: connection errors or 5xx from every endpoint after retries
    8  locked: another filler holds the destination's lock and --lock-timeout ran out
"""

from __future__ import annotations

import enum
import errno


class ExitCode(enum.IntEnum):
    OK = 0
    UNEXPECTED = 1
    USAGE = 2
    AUTH_REFUSED = 3
    NOT_FOUND = 4
    DISK_FULL = 5
    CHECKSUM_MISMATCH = 6
    SOURCE_UNREACHABLE = 7
    LOCKED = 8


class FillError(Exception):
    """A failure with a known exit code; str() is the one-line message."""

    code: ExitCode = ExitCode.UNEXPECTED


class UsageError(FillError):
    code = ExitCode.USAGE


class AuthRefusedError(FillError):
    code = ExitCode.AUTH_REFUSED


class NotFoundError(FillError):
    code = ExitCode.NOT_FOUND


class DiskFullError(FillError):
    code = ExitCode.DISK_FULL


class ChecksumMismatchError(FillError):
    code = ExitCode.CHECKSUM_MISMATCH

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"checksum mismatch in {path}: {detail}")
        self.path = path


class SourceUnreachableError(FillError):
    code = ExitCode.SOURCE_UNREACHABLE


class LockedError(FillError):
    code = ExitCode.LOCKED


def classify(exc: BaseException) -> tuple[ExitCode, str]:
    """The exit code and one-line message for an exception that ended a fill."""
    if isinstance(exc, FillError):
        return exc.code, str(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" ({exc.filename})" if exc.filename else ""
        return ExitCode.DISK_FULL, f"disk full while writing{where}: {exc.strerror}"
    return ExitCode.UNEXPECTED, f"unexpected error: {type(exc).__name__}: {exc}"


def status_error(status: int, what: str, *, token_sent: bool, error_code: str = "") -> FillError:
    """The error for an HTTP status that retrying the same request cannot fix.

    The Hub answers 401 with `X-Error-Code: RepoNotFound` for a repository that does
    not exist (or that the caller may not see), so the code header wins over the status.
    """
    if error_code in ("RepoNotFound", "RevisionNotFound", "EntryNotFound") or status == 404:
        hint = "" if token_sent or status == 404 else " (no HF_TOKEN sent: private or gated?)"
        return NotFoundError(f"not found: {what} ({status} {error_code or 'Not Found'}){hint}")
    if status in (401, 403):
        token = "the HF_TOKEN sent was refused" if token_sent else "no HF_TOKEN was sent"
        return AuthRefusedError(f"auth refused: {what} answered {status}; {token}")
    return FillError(f"unexpected HTTP {status} from {what}")


class RetryableError(FillError):
    """A connection error or 5xx: worth another try, then `source unreachable`."""

    code = ExitCode.SOURCE_UNREACHABLE

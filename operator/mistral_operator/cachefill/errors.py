"""The errors that end a fill, each with its exit code (the table is `codes.ExitCode`)."""

from __future__ import annotations

import errno

from mistral_operator.cachefill.codes import ExitCode

__all__ = [
    "AuthRefusedError",
    "ChecksumMismatchError",
    "DiskFullError",
    "ExitCode",
    "FillError",
    "LockedError",
    "NotFoundError",
    "RetryableError",
    "SourceUnreachableError",
    "UsageError",
    "classify",
    "status_error",
]


class FillError(Exception):
    """A failure with a known exit code; str() is the one-line message.

    `path` names the repository file concerned, when one is (a checksum mismatch, a
    file the source does not have); the termination-log result reports it as `file`.
    """

    code: ExitCode = ExitCode.UNEXPECTED

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


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
        super().__init__(f"checksum mismatch in {path}: {detail}", path=path)


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


def status_error(
    status: int, what: str, *, token_sent: bool, error_code: str = "", path: str | None = None
) -> FillError:
    """The error for an HTTP status that retrying the same request cannot fix.

    The Hub answers 401 with `X-Error-Code: RepoNotFound` for a repository that does
    not exist (or that the caller may not see), so the code header wins over the status.
    `path` is the repository file the request was for, if any.
    """
    if error_code in ("RepoNotFound", "RevisionNotFound", "EntryNotFound") or status == 404:
        hint = "" if token_sent or status == 404 else " (no HF_TOKEN sent: private or gated?)"
        return NotFoundError(
            f"not found: {what} ({status} {error_code or 'Not Found'}){hint}", path=path
        )
    if status in (401, 403):
        token = "the HF_TOKEN sent was refused" if token_sent else "no HF_TOKEN was sent"
        return AuthRefusedError(f"auth refused: {what} answered {status}; {token}", path=path)
    return FillError(f"unexpected HTTP {status} from {what}", path=path)


class RetryableError(FillError):
    """A connection error or 5xx: worth another try, then `source unreachable`."""

    code = ExitCode.SOURCE_UNREACHABLE

"""The machine-readable result `cachefill` and `cacheclean` leave in the termination log.

With `--termination-log PATH` (a Job passes `/dev/termination-log`, the container's
`terminationMessagePath`) the program writes one compact JSON object there as it
exits, at most `MAX_BYTES` (the kubelet keeps no more), so the operator reads how a
fill or a clean ended from the pod's `state.terminated.message` alone:

    {"result":"Ready","commit":"<40 hex>","totalBytes":N,"files":N,"fetchedBytes":N,
     "seconds":F,"bytesPerSecond":F|null,"diskFreeBytes":N,"diskTotalBytes":N}
    ... with --verify-checksums on a ready directory, also:
     "verified":true,"repaired":["<path>",...]
    {"result":"Failed","exitCode":N,"reason":"NotFound","message":"...","file":"...",
     "doneBytes":N,"totalBytes":N|null,"diskFreeBytes":N,"diskTotalBytes":N}
    {"result":"Cleaned","removed":[...],"absent":[...],"skipped":[{"key":..,"reason":..}],
     "freedBytes":N,"diskFreeBytes":N,"diskTotalBytes":N}

This module only builds, renders and parses those objects: no I/O and nothing heavy
to import, for the operator's core.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mistral_operator.cachefill.codes import ExitCode, from_reason

MAX_BYTES = 4096  # the kubelet's limit on a termination message read from the file
ELLIPSIS = "..."
SIDE_CAP = 512  # characters a file or commit keeps when the whole does not fit

READY = "Ready"
FAILED = "Failed"
CLEANED = "Cleaned"


def render(data: dict[str, Any]) -> str:
    """Compact JSON; ASCII only, so its length in characters is its length in bytes."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _cut(value: str, keep: int) -> str:
    return value if keep >= len(value) else value[:keep] + ELLIPSIS


def _fit_strings(data: dict[str, Any], keys: tuple[str, ...]) -> str:
    """Render data, cutting the strings at keys until it fits MAX_BYTES.

    The first key (the message) is what a reader needs most: the others are capped at
    SIDE_CAP characters first; then each key in turn is cut to the longest prefix that
    fits (found by bisection, since escapes make a character render as up to 12 bytes).
    """
    text = render(data)
    if len(text) <= MAX_BYTES:
        return text
    for key in keys[1:]:
        if isinstance(data.get(key), str):
            data[key] = _cut(data[key], SIDE_CAP)
    for key in keys:
        text = render(data)
        value = data.get(key)
        if len(text) <= MAX_BYTES:
            break
        if not isinstance(value, str):
            continue
        low, high = 0, len(value)  # cutting to `low` fits (to 0 may not: try it)
        data[key] = ""
        if len(render(data)) > MAX_BYTES:
            continue
        while low < high:
            middle = (low + high + 1) // 2
            data[key] = _cut(value, middle)
            if len(render(data)) <= MAX_BYTES:
                low = middle
            else:
                high = middle - 1
        data[key] = _cut(value, low) if low else ""
    return render(data)


def _int(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(key)
    return value


def _float(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(key)
    return float(value)


def _bool(data: dict[str, Any], key: str) -> bool:
    """A flag that older results leave out: absent is False."""
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise TypeError(key)
    return value


def _str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(key)
    return value


def _object(text: str) -> dict[str, Any] | None:
    """The JSON object text holds, or None (a kubelet's log tail, an empty file, ...)."""
    text = text.strip()
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def one_line(message: str) -> str:
    return " ".join(message.split())


@dataclass(frozen=True)
class FillResult:
    """How a `cachefill` run ended: Ready (exit 0) or Failed (exit code and reason)."""

    result: str  # READY or FAILED
    exit_code: int
    reason: str  # codes.ExitCode's reason: "Ready", "NotFound", "DiskFull", ...
    message: str = ""
    file: str | None = None  # the repository file concerned, when one is
    commit: str | None = None
    total_bytes: int | None = None  # None when a fill failed before it knew
    files: int | None = None
    fetched_bytes: int | None = None  # bytes this run downloaded
    done_bytes: int | None = None  # bytes on disk of the total when it failed
    seconds: float | None = None
    bytes_per_second: float | None = None
    disk_free_bytes: int | None = None
    disk_total_bytes: int | None = None
    verified: bool = False  # a ready directory's files were hashed again (--verify-checksums)
    repaired: tuple[str, ...] = ()  # the damaged files that check fetched again in place
    repaired_truncated: bool = False  # repaired was cut to fit MAX_BYTES

    @property
    def ready(self) -> bool:
        return self.result == READY

    @property
    def code(self) -> ExitCode | None:
        """The exit code as our table names it (None for a reason it does not list)."""
        return from_reason(self.reason)

    @classmethod
    def succeeded(
        cls,
        *,
        commit: str,
        total_bytes: int,
        files: int,
        fetched_bytes: int,
        seconds: float,
        disk_free_bytes: int | None,
        disk_total_bytes: int | None,
        verified: bool = False,
        repaired: tuple[str, ...] = (),
    ) -> FillResult:
        rate = fetched_bytes / seconds if fetched_bytes > 0 and seconds > 0 else None
        return cls(
            READY,
            int(ExitCode.OK),
            ExitCode.OK.reason,
            commit=commit,
            total_bytes=total_bytes,
            files=files,
            fetched_bytes=fetched_bytes,
            seconds=round(seconds, 3),
            bytes_per_second=None if rate is None else round(rate, 1),
            disk_free_bytes=disk_free_bytes,
            disk_total_bytes=disk_total_bytes,
            verified=verified,
            repaired=repaired,
        )

    @classmethod
    def failed(
        cls,
        code: ExitCode,
        message: str,
        *,
        file: str | None = None,
        done_bytes: int = 0,
        total_bytes: int | None = None,
        disk_free_bytes: int | None = None,
        disk_total_bytes: int | None = None,
    ) -> FillResult:
        return cls(
            FAILED,
            int(code),
            code.reason,
            message=one_line(message),
            file=file,
            done_bytes=done_bytes,
            total_bytes=total_bytes,
            disk_free_bytes=disk_free_bytes,
            disk_total_bytes=disk_total_bytes,
        )

    def to_json(self) -> dict[str, Any]:
        disk = {"diskFreeBytes": self.disk_free_bytes, "diskTotalBytes": self.disk_total_bytes}
        if self.ready:
            return {
                "result": READY,
                "commit": self.commit,
                "totalBytes": self.total_bytes,
                "files": self.files,
                "fetchedBytes": self.fetched_bytes,
                "seconds": self.seconds,
                "bytesPerSecond": self.bytes_per_second,
                **disk,
                **self._verification(),
            }
        data: dict[str, Any] = {
            "result": FAILED,
            "exitCode": self.exit_code,
            "reason": self.reason,
            "message": self.message,
        }
        if self.file is not None:
            data["file"] = self.file
        return data | {"doneBytes": self.done_bytes, "totalBytes": self.total_bytes, **disk}

    def _verification(self) -> dict[str, Any]:
        """The keys a verifying run adds; none otherwise, so other results stay as they were."""
        if not (self.verified or self.repaired):
            return {}
        data: dict[str, Any] = {"verified": self.verified, "repaired": list(self.repaired)}
        if self.repaired_truncated:
            data["repairedTruncated"] = True
        return data

    def render(self) -> str:
        """The termination-log text: valid JSON of at most MAX_BYTES, long strings cut."""
        data = self.to_json()
        if data.get("repaired"):
            _fit_repaired(data)
        return _fit_strings(data, ("message", "file", "commit"))


def _fit_repaired(data: dict[str, Any]) -> None:
    """Drop repaired paths from the end of the list until data fits MAX_BYTES.

    The commit and each path are first capped at SIDE_CAP (as _fit_strings caps side
    strings), so that one long string does not push every path out; a list that lost
    paths gains `repairedTruncated`, so a reader knows it is not the whole list.
    """
    if len(render(data)) <= MAX_BYTES:
        return
    if isinstance(data.get("commit"), str):
        data["commit"] = _cut(data["commit"], SIDE_CAP)
    paths: list[str] = [_cut(path, SIDE_CAP) for path in data["repaired"]]
    data["repaired"] = paths
    while paths and len(render(data)) > MAX_BYTES:
        paths.pop()
        data["repairedTruncated"] = True


def parse_result(text: str) -> FillResult | None:
    """The FillResult a termination message holds, or None when it holds none of ours."""
    data = _object(text)
    if data is None:
        return None
    try:
        return _parse_fill(data)
    except TypeError:
        return None


def _parse_fill(data: dict[str, Any]) -> FillResult | None:
    result = data.get("result")
    common: dict[str, Any] = {
        "total_bytes": _int(data, "totalBytes"),
        "disk_free_bytes": _int(data, "diskFreeBytes"),
        "disk_total_bytes": _int(data, "diskTotalBytes"),
    }
    if result == READY:
        commit = _str(data, "commit")
        if commit is None:
            return None
        return FillResult(
            READY,
            int(ExitCode.OK),
            ExitCode.OK.reason,
            commit=commit,
            files=_int(data, "files"),
            fetched_bytes=_int(data, "fetchedBytes"),
            seconds=_float(data, "seconds"),
            bytes_per_second=_float(data, "bytesPerSecond"),
            verified=_bool(data, "verified"),
            repaired=_strings(data, "repaired"),
            repaired_truncated=_bool(data, "repairedTruncated"),
            **common,
        )
    if result == FAILED:
        exit_code, reason = _int(data, "exitCode"), _str(data, "reason")
        if exit_code is None or reason is None:
            return None
        return FillResult(
            FAILED,
            exit_code,
            reason,
            message=_str(data, "message") or "",
            file=_str(data, "file"),
            done_bytes=_int(data, "doneBytes"),
            **common,
        )
    return None


@dataclass(frozen=True)
class SkippedKey:
    key: str
    reason: str  # "locked": a filler holds the key's lock; "error": see message
    message: str | None = None


@dataclass(frozen=True)
class CleanResult:
    """How a `cacheclean` run ended (a usage error leaves a Failed FillResult instead)."""

    removed: tuple[str, ...]
    absent: tuple[str, ...]
    skipped: tuple[SkippedKey, ...]
    freed_bytes: int
    disk_free_bytes: int | None = None
    disk_total_bytes: int | None = None
    truncated: bool = False  # lists were cut to fit MAX_BYTES

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "result": CLEANED,
            "removed": list(self.removed),
            "absent": list(self.absent),
            "skipped": [
                {"key": s.key, "reason": s.reason}
                | ({"message": s.message} if s.message is not None else {})
                for s in self.skipped
            ],
            "freedBytes": self.freed_bytes,
            "diskFreeBytes": self.disk_free_bytes,
            "diskTotalBytes": self.disk_total_bytes,
        }
        if self.truncated:
            data["truncated"] = True
        return data

    def render(self) -> str:
        """At most MAX_BYTES: messages are cut, then list entries dropped (absent first)."""
        data = self.to_json()
        for entry in data["skipped"]:
            if "message" in entry and len(entry["message"]) > 200:
                entry["message"] = entry["message"][:200] + ELLIPSIS
        text = render(data)
        for key in ("absent", "removed", "skipped"):
            while len(text) > MAX_BYTES and data[key]:
                data[key].pop()
                data["truncated"] = True
                text = render(data)
        return text


def parse_clean_result(text: str) -> CleanResult | None:
    """The CleanResult a termination message holds, or None when it holds none."""
    data = _object(text)
    if data is None or data.get("result") != CLEANED:
        return None
    try:
        return CleanResult(
            removed=_strings(data, "removed"),
            absent=_strings(data, "absent"),
            skipped=tuple(_skipped(entry) for entry in _list(data, "skipped")),
            freed_bytes=_int(data, "freedBytes") or 0,
            disk_free_bytes=_int(data, "diskFreeBytes"),
            disk_total_bytes=_int(data, "diskTotalBytes"),
            truncated=data.get("truncated") is True,
        )
    except TypeError:
        return None


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise TypeError(key)
    return value


def _strings(data: dict[str, Any], key: str) -> tuple[str, ...]:
    values = _list(data, key)
    if not all(isinstance(v, str) for v in values):
        raise TypeError(key)
    return tuple(values)


def _skipped(entry: Any) -> SkippedKey:
    if not isinstance(entry, dict):
        raise TypeError("skipped")
    key, reason = _str(entry, "key"), _str(entry, "reason")
    if key is None or reason is None:
        raise TypeError("skipped")
    return SkippedKey(key, reason, _str(entry, "message"))

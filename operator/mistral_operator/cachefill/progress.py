"""Progress of a fill: bytes done of total, rate, ETA, as a log line and a JSON line.

The machine-readable line, printed to stdout every interval and once at the end,
is the prefix `mistral-cachefill-progress ` followed by one JSON object:

    {"phase": "download", "doneBytes": 1048576, "totalBytes": 4194304,
     "filesDone": 1, "filesTotal": 4, "bytesPerSecond": 5242880.0, "etaSeconds": 0.6}

`phase` is `download` while bytes move and `done` on the last line. With
`--verify-checksums` a ready directory is first hashed again: `phase` is `verify`
and `doneBytes` the bytes hashed so far (of `totalBytes`, the directory's); should
files need fetching again, `download` lines follow, counting the directory's bytes
in place. The rate counts only bytes moved (or hashed) by this run (resumed bytes
were already there), averaged since the first byte; `etaSeconds` is null until a
rate is known.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

PREFIX = "mistral-cachefill-progress "
log = logging.getLogger("mistral_operator.cachefill")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_seconds(s: float) -> str:
    s = round(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclass(frozen=True)
class Snapshot:
    phase: str
    done: int
    total: int
    files_done: int
    files_total: int
    rate: float | None  # bytes per second moved by this run
    eta: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "doneBytes": self.done,
            "totalBytes": self.total,
            "filesDone": self.files_done,
            "filesTotal": self.files_total,
            "bytesPerSecond": None if self.rate is None else round(self.rate, 1),
            "etaSeconds": None if self.eta is None else round(self.eta, 1),
        }

    def line(self) -> str:
        return PREFIX + json.dumps(self.to_json(), separators=(",", ":"))

    def message(self) -> str:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        text = (
            f"{human_bytes(self.done)} / {human_bytes(self.total)} ({pct:.1f}%), "
            f"{self.files_done}/{self.files_total} files"
        )
        if self.rate is not None:
            text += f", {human_bytes(self.rate)}/s"
        if self.eta is not None:
            text += f", ETA {human_seconds(self.eta)}"
        return text


def snapshot(
    *,
    phase: str,
    done: int,
    total: int,
    files_done: int,
    files_total: int,
    done_at_start: int,
    elapsed: float,
) -> Snapshot:
    """Rate over this run's own bytes, and the time the rest takes at that rate."""
    moved = done - done_at_start
    rate = moved / elapsed if elapsed > 0 and moved > 0 else None
    eta = max(total - done, 0) / rate if rate else None
    return Snapshot(phase, done, total, files_done, files_total, rate, eta)


def parse_line(line: str) -> dict[str, Any] | None:
    """The JSON object of a progress line, or None for any other line."""
    if not line.startswith(PREFIX):
        return None
    data = json.loads(line.removeprefix(PREFIX))
    return data if isinstance(data, dict) else None


class Counter:
    """Bytes and files done, shared by the download threads.

    `done` is what the directory holds of the total (it drops when bytes are thrown
    away); `fetched` only grows: every byte this run received.
    """

    def __init__(self, total: int, files_total: int) -> None:
        self.total = total
        self.files_total = files_total
        self.done = 0
        self.fetched = 0
        self.files_done = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n

    def received(self, n: int) -> None:
        """n bytes arrived from the source and were written."""
        with self._lock:
            self.done += n
            self.fetched += n

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1


class Reporter:
    """Logs and prints a progress snapshot every interval until stopped.

    Each line says `phase`; a block that ends without an error prints a last line
    with `end_phase` (none when it is None: the caller says what comes next).
    """

    def __init__(
        self,
        counter: Counter,
        interval: float,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        phase: str = "download",
        end_phase: str | None = "done",
    ) -> None:
        self.counter = counter
        self.interval = interval
        self.out = out or sys.stdout
        self.clock = clock
        self.phase = phase
        self.end_phase = end_phase
        self._started = clock()
        self._done_at_start = counter.done
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cachefill-progress", daemon=True)

    def __enter__(self) -> Reporter:
        self._started = self.clock()
        self._done_at_start = self.counter.done
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None and self.end_phase is not None:
            self.emit(self.end_phase)

    def current(self, phase: str) -> Snapshot:
        c = self.counter
        return snapshot(
            phase=phase,
            done=c.done,
            total=c.total,
            files_done=c.files_done,
            files_total=c.files_total,
            done_at_start=self._done_at_start,
            elapsed=self.clock() - self._started,
        )

    def emit(self, phase: str) -> None:
        snap = self.current(phase)
        log.info("progress: %s", snap.message())
        print(snap.line(), file=self.out, flush=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.emit(self.phase)

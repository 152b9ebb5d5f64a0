"""Large files fetched in segments: the record, the ordered hash, and fills against the stub hub.

With `--segment-mib 1` the largest shard of weights() (2 MiB + 123 bytes) is three
segments and the second shard (1 MiB + 4567 bytes) two.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import threading
from pathlib import Path
from typing import NamedTuple

import pytest

from mistral_operator.cachefill import segments
from mistral_operator.cachefill.errors import ExitCode
from mistral_operator.cachefill.fill import FillOptions, MiB, fill
from mistral_operator.cachefill.layout import Layout, part_path
from mistral_operator.cachefill.local import LocalReader, LocalStream
from mistral_operator.cachefill.sources import LocalSource
from mistral_operator.cachefill.verify import FileSpec
from tests.support.stub_hub import StubHub
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
)
from tests.unit.test_cachefill_fill import assert_ready, progress_of

SEGMENTED = ("--segment-mib", "1")
SECOND = "model-00002-of-00002.safetensors"


def gets_of(hub: StubHub, name: str) -> int:
    return sum(1 for method, path in hub.requests if method == "GET" and path.endswith(name))


def leave_segments(
    dest: Path, hub: StubHub, name: str, counts: list[int], data: bytes | None = None
) -> Path:
    """A part of `name` as a killed segmented fill leaves it: `counts` bytes per segment."""
    repo = repo_of(hub)
    true = repo.files[name].data
    data = true if data is None else data
    temp = Layout(dest).temp(repo.commit)
    temp.mkdir(parents=True, exist_ok=True)
    part = part_path(temp, name)
    parts = segments.split(len(true), MiB)
    with part.open("wb") as out:
        for segment, count in zip(parts, counts, strict=True):
            out.seek(segment.start)
            out.write(data[segment.start : segment.start + count])
    segments.Record(part, MiB, counts).close()
    return part


# -- the pure parts -------------------------------------------------------------------


def test_split_into_segments() -> None:
    assert segments.split(10, 0) == [segments.Segment(0, 0, 10)]
    assert segments.split(10, 10) == [segments.Segment(0, 0, 10)]
    assert segments.split(25, 10) == [
        segments.Segment(0, 0, 10),
        segments.Segment(1, 10, 20),
        segments.Segment(2, 20, 25),
    ]


def test_covered_and_contiguous() -> None:
    ranges = [(0, 4), (10, 13), (4, 6)]
    assert segments.contiguous(ranges) == 6
    assert segments.covered(ranges, segments.Segment(1, 10, 20)) == 3
    assert segments.covered(ranges, segments.Segment(1, 5, 10)) == 1
    assert segments.covered(ranges, segments.Segment(1, 7, 10)) == 0
    assert segments.contiguous([]) == 0


def test_read_ranges_of_every_kind_of_part(tmp_path: Path) -> None:
    part = tmp_path / "f.part"
    assert segments.read_ranges(part, 100) == []  # no part
    part.write_bytes(b"x" * 30)
    assert segments.read_ranges(part, 100) == [(0, 30)]  # one stream wrote it
    assert segments.read_ranges(part, 20) == [(0, 20)]  # never past the file's size
    assert segments.present(part, 100) == 30
    segments.Record(part, 10, [10, 0, 7]).close()
    assert segments.read_ranges(part, 30) == [(0, 10), (20, 27)]
    assert segments.present(part, 30) == 17
    # A count is never believed past the part's end, nor past its segment.
    segments.Record(part, 10, [10, 99, 0]).close()
    assert segments.read_ranges(part, 30) == [(0, 10), (10, 20)]
    raw = segments.record_path(part).read_bytes()
    segments.record_path(part).write_bytes(raw[:-3])  # the last count cut short
    assert segments.read_ranges(part, 30) == [(0, 10), (10, 20)]
    segments.record_path(part).write_bytes(raw[:5])  # a record cut short as it was made
    assert segments.read_ranges(part, 30) == []
    segments.record_path(part).write_bytes(b"something else entirely")
    assert segments.read_ranges(part, 30) == []
    segments.remove_record(part)
    segments.remove_record(part)  # gone already: no error
    assert not segments.record_path(part).exists()


def test_the_ordered_hasher_waits_for_the_gap(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(3000)
    part = tmp_path / "f.part"
    part.write_bytes(b"")
    parts = segments.split(len(data), 1000)
    spec = FileSpec("f", len(data), sha256=hashlib.sha256(data).hexdigest())
    hasher = segments.OrderedHasher(part, spec, parts)
    thread = threading.Thread(target=hasher.run)
    thread.start()
    with part.open("r+b") as out:
        for index in (2, 1):  # the end first: nothing can be hashed yet
            out.seek(parts[index].start)
            out.write(data[parts[index].start : parts[index].end])
            out.flush()
            hasher.written(index, 1000)
        assert hasher.digest.size == 0
        out.seek(0)
        out.write(data[:1000])
        out.flush()
        hasher.written(0, 1000)
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert hasher.error is None
    assert hasher.digest.mismatch() is None

    stopped = segments.OrderedHasher(part, spec, parts)
    thread = threading.Thread(target=stopped.run)
    thread.start()
    stopped.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert stopped.digest.size == 0


# -- fills against the stub hub -----------------------------------------------------


def test_a_large_file_is_fetched_as_segments(hub_env: StubHub, tmp_path: Path, run: Runner) -> None:
    dest = dest_in(tmp_path)
    code, out, err = run(fill_args(dest, *SEGMENTED))
    assert code == 0, err
    repo = repo_of(hub_env)
    assert_ready(dest, repo)
    assert hub_env.bytes_served() == repo.total_bytes
    assert gets_of(hub_env, SHARD) == 3
    assert gets_of(hub_env, SECOND) == 2
    assert gets_of(hub_env, "config.json") == 1
    assert not list(dest.rglob(f"*{segments.RECORD_SUFFIX}"))
    assert progress_of(out)[-1]["doneBytes"] == repo.total_bytes


class Left(NamedTuple):
    """What a killed run left of SHARD, how the next run fetches, what it keeps."""

    counts: list[int] | None  # bytes per 1 MiB segment in a record; None: one stream
    one_stream_bytes: int  # the part's length when one stream wrote it
    extra: tuple[str, ...]  # the next run's options
    kept: int  # bytes the next run does not fetch again
    gets: int | None  # the next run's GETs of SHARD, when it matters


RESUMES = {
    # Half of the first segment and the whole last one: two segments are asked for.
    "segments-in-segments": Left([MiB // 2, 0, 123], 0, SEGMENTED, MiB // 2 + 123, 2),
    # The first segment whole and a little of the second.
    "one-stream-in-segments": Left(None, MiB + 1000, SEGMENTED, MiB + 1000, None),
    # The first segment and half the second are the file's start: kept.
    "segments-in-one-stream": Left([MiB, MiB // 2, 0], 0, (), MiB + MiB // 2, None),
    # A gap after the first quarter: only the file's start is kept.
    "gap-in-one-stream": Left([MiB // 4, MiB, 0], 0, (), MiB // 4, None),
}


@pytest.mark.parametrize("left", RESUMES.values(), ids=RESUMES.keys())
def test_a_resume_keeps_what_is_on_disk_in_either_form(
    hub_env: StubHub, tmp_path: Path, run: Runner, left: Left
) -> None:
    repo = repo_of(hub_env)
    size = len(repo.files[SHARD].data)
    dest = dest_in(tmp_path)
    if left.counts is not None:
        leave_segments(dest, hub_env, SHARD, left.counts)
    else:
        temp = Layout(dest).temp(repo.commit)
        temp.mkdir(parents=True)
        part_path(temp, SHARD).write_bytes(repo.files[SHARD].data[: left.one_stream_bytes])
    code, out, err = run(fill_args(dest, *left.extra))
    assert code == 0, err
    assert "resuming" in err
    assert hub_env.served[f"{REPO}/{SHARD}"] == size - left.kept
    if left.gets is not None:
        assert gets_of(hub_env, SHARD) == left.gets  # a finished segment is not asked for
    assert_ready(dest, repo)
    assert progress_of(out)[-1]["doneBytes"] == repo.total_bytes


def test_a_source_that_ignores_ranges_gets_the_file_in_one_stream(
    hub_env: StubHub, tmp_path: Path, run: Runner
) -> None:
    hub_env.ignore_range = True
    dest = dest_in(tmp_path)
    code, out, err = run(fill_args(dest, *SEGMENTED))
    assert code == 0, err
    assert "ignored a range" in err
    repo = repo_of(hub_env)
    assert_ready(dest, repo)
    assert progress_of(out)[-1]["doneBytes"] == repo.total_bytes


def test_a_corrupt_segmented_file_is_named(hub_env: StubHub, tmp_path: Path, run: Runner) -> None:
    hub_env.corrupt(REPO, SHARD, offset=MiB + 5)  # in the second segment
    dest = dest_in(tmp_path)
    code, _, err = run(fill_args(dest, *SEGMENTED))
    assert code == ExitCode.CHECKSUM_MISMATCH
    assert f"checksum mismatch in {SHARD}" in err
    assert not dest.exists()


def test_bad_kept_bytes_in_segments_fetch_the_file_again(
    hub_env: StubHub, tmp_path: Path, run: Runner
) -> None:
    repo = repo_of(hub_env)
    size = len(repo.files[SHARD].data)
    dest = dest_in(tmp_path)
    leave_segments(dest, hub_env, SHARD, [0, MiB, 0], data=b"\0" * size)
    code, out, err = run(fill_args(dest, *SEGMENTED))
    assert code == 0, err
    assert "fetching the whole file again" in err
    assert hub_env.served[f"{REPO}/{SHARD}"] == (size - MiB) + size
    assert_ready(dest, repo)
    assert progress_of(out)[-1]["doneBytes"] == repo.total_bytes


def test_a_full_disk_in_a_segment_names_the_file(
    hub_env: StubHub, tmp_path: Path, run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pwrite = os.pwrite
    room = [MiB]

    def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(".part"):
            return real_pwrite(fd, data, offset)
        if room[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_pwrite(fd, data[: room[0]], offset)
        room[0] -= n
        return n

    monkeypatch.setattr(os, "pwrite", pwrite)
    dest = dest_in(tmp_path)
    code, _, err = run(fill_args(dest, *SEGMENTED))
    assert code == ExitCode.DISK_FULL
    assert "disk full while writing" in err
    assert not dest.exists()


# -- a stream that breaks mid-segment -------------------------------------------------


class ShortStream(LocalStream):
    """Ends after `limit` bytes, as a connection that drops."""

    def __init__(self, path: Path, offset: int, limit: int) -> None:
        super().__init__(path, offset)
        self.left = limit

    def read(self, n: int) -> bytes:
        data = super().read(min(n, self.left))
        self.left -= len(data)
        return data


class BreakingReader(LocalReader):
    """Each segment's first stream breaks after 300 kB; later ones run to the end."""

    def __init__(self, source: LocalSource) -> None:
        super().__init__(source)
        self.opened: list[tuple[int, int | None]] = []

    def open(self, spec: FileSpec, offset: int, end: int | None = None) -> LocalStream:
        first = all(e != end for _, e in self.opened)
        self.opened.append((offset, end))
        if first:
            return ShortStream(self.root / spec.path, offset, 300_000)
        return super().open(spec, offset, end)


def test_a_broken_segment_resumes_where_it_stopped(tmp_path: Path) -> None:
    data = random.Random(5).randbytes(3 * MiB + 17)
    source = tmp_path / "source"
    source.mkdir()
    (source / "weights.bin").write_bytes(data)
    reader = BreakingReader(LocalSource(str(source), "v1"))
    dest = tmp_path / "cache" / "key"
    options = FillOptions(
        source=str(source), revision="v1", dest=dest, segment_bytes=MiB, retry_delay=0.01
    )
    manifest = fill(options, reader)
    assert (dest / "weights.bin").read_bytes() == data
    assert manifest.files[0].sha256 == hashlib.sha256(data).hexdigest()
    starts = sorted(offset for offset, _ in reader.opened)
    # Four segments, each opened at its start and again 300 kB in (the last is 17 bytes).
    assert starts == [0, 300_000, MiB, MiB + 300_000, 2 * MiB, 2 * MiB + 300_000, 3 * MiB]

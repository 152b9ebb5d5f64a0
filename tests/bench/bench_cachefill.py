"""`make bench`: cachefill throughput against a plain download, and what a kill costs.

Everything runs on 127.0.0.1 against the stub hub (`tests/support/stub_hub.py`), in
one run, so the figures are ratios that compare across machines:

- **throughput**: `mistral-operator cachefill` (a subprocess, as a Job runs it) against
  a baseline measured in the same run: a plain sequential streaming GET of each file
  to disk in a subprocess of the same kind (urllib3, reads of the fill's chunk size, no hashing, no
  fsync). The ratio is the fill's bytes per second over the baseline's (>= 0.9 is the
  goal), for one file and for `--files` files, over the unlimited loopback and over a
  link the stub hub limits to `--rate-mib` MiB/s.
- **kill-resume**: a fill of one file (fetched in segments) and one of `--files` files
  (one stream each), SIGKILLed when about half the bytes are on disk, then started
  again; the bytes the stub hub served beyond the total are what the kill cost (goal:
  <= 1% of the total plus one chunk).

Each timed run starts from an empty directory with no dirty pages left by the one
before (its files are removed and `sync` is called outside the timing).

Run: `python -m tests.bench.bench_cachefill [--file-gib 1] [--files 4]`; a CI-size run:
`--file-gib 0.125`. Exits non-zero only when a run fails, never for a missed goal.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mistral_operator.cachefill.fill import FillOptions
from tests.support.stub_hub import StubHub, StubRepo

MiB = 1024 * 1024
GiB = 1024 * MiB
REPO_ROOT = Path(__file__).resolve().parents[2]
CHUNK = FillOptions.chunk_bytes  # what the fill reads at a time: "one chunk" below
RESUME_GOAL = 0.01  # of the total, plus one chunk
RATIO_GOAL = 0.9


class BenchError(Exception):
    """A run failed: the benchmark cannot report."""


# -- the baseline: a plain download -------------------------------------------------


def plain_get(endpoint: str, repo: str, commit: str, dest: Path, paths: list[str]) -> None:
    """Stream each file to disk, one after the other: what a simple downloader does."""
    import urllib3  # noqa: PLC0415 (only the subprocess needs it)

    pool = urllib3.PoolManager(headers={"Accept-Encoding": "identity"})
    for path in paths:
        response = pool.request(
            "GET", f"{endpoint}/{repo}/resolve/{commit}/{path}", preload_content=False
        )
        if response.status != 200:
            raise BenchError(f"GET {path}: HTTP {response.status}")
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            for chunk in response.stream(CHUNK, decode_content=False):
                out.write(chunk)
        response.release_conn()


# -- runs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    repo: StubRepo

    @property
    def total(self) -> int:
        return self.repo.total_bytes


class Bench:
    def __init__(self, hub: StubHub, work: Path) -> None:
        self.hub = hub
        self.work = work
        self.env = {**os.environ, "HF_ENDPOINT": hub.url}
        self.env.pop("HF_TOKEN", None)
        self.runs = 0

    def _dest(self) -> Path:
        self.runs += 1
        return self.work / f"run-{self.runs}" / "key"

    def _wait(self, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
        code = proc.wait()
        if code != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise BenchError(f"{what} exited {code}:\n{tail}")

    def _clean(self, dest: Path) -> None:
        shutil.rmtree(dest.parent, ignore_errors=True)
        os.sync()  # the next run starts with no dirty pages of this one

    def fill_command(self, case: Case, dest: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "mistral_operator.cachefill",
            "--source",
            f"hf://{case.repo.repo_id}",
            "--revision",
            "main",
            "--dest",
            str(dest),
            "--progress-interval",
            "3600",
        ]

    def start_fill(self, case: Case, dest: Path, log: Path) -> subprocess.Popen[bytes]:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            return subprocess.Popen(
                self.fill_command(case, dest), env=self.env, stdout=out, stderr=out
            )

    def time_fill(self, case: Case) -> float:
        dest = self._dest()
        log = self.work / f"fill-{self.runs}.log"
        try:
            started = time.perf_counter()
            self._wait(self.start_fill(case, dest, log), log, "cachefill")
            return time.perf_counter() - started
        finally:
            self._clean(dest)

    def time_plain(self, case: Case) -> float:
        dest = self._dest()
        log = self.work / f"plain-{self.runs}.log"
        command = [
            sys.executable,
            "-m",
            "tests.bench.bench_cachefill",
            "plain-get",
            self.hub.url,
            case.repo.repo_id,
            case.repo.commit,
            str(dest),
            *case.repo.files,
        ]
        dest.mkdir(parents=True)
        try:
            with log.open("wb") as out:
                started = time.perf_counter()
                proc = subprocess.Popen(
                    command, env=self.env, cwd=REPO_ROOT, stdout=out, stderr=out
                )
                self._wait(proc, log, "the plain download")
                return time.perf_counter() - started
        finally:
            self._clean(dest)

    def kill_resume(self, case: Case, link: str) -> Resume:
        """A fill SIGKILLed once half its bytes are on disk, then run again to the end."""
        dest = self._dest()
        log = self.work / f"resume-{self.runs}.log"
        served_before = self.hub.bytes_served(case.repo.repo_id)
        try:
            proc = self.start_fill(case, dest, log)
            while proc.poll() is None:
                if bytes_under(dest.parent, f"{dest.name}.tmp-") >= case.total // 2:
                    proc.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.005)
            if proc.wait() != -signal.SIGKILL:
                raise BenchError(f"the fill ended before it was killed; see {log}")
            time.sleep(0.2)  # the hub's writes to the dead connections fail meanwhile
            served_at_kill = self.hub.bytes_served(case.repo.repo_id) - served_before
            on_disk = bytes_under(dest.parent, f"{dest.name}.tmp-")
            self._wait(self.start_fill(case, dest, log), log, "the resumed cachefill")
            served = self.hub.bytes_served(case.repo.repo_id) - served_before
            return Resume(case.name, link, case.total, on_disk, served_at_kill, served)
        finally:
            self._clean(dest)


def bytes_under(root: Path, prefix: str) -> int:
    """Bytes on disk in the files of the directories under root whose name starts with
    prefix (allocated blocks: a part written in segments has holes until it is whole)."""
    total = 0
    for top in root.glob(f"{prefix}*"):
        for dirpath, _, names in os.walk(top):
            for name in names:
                try:
                    found = os.stat(os.path.join(dirpath, name))
                    total += min(found.st_size, found.st_blocks * 512)
                except FileNotFoundError:
                    continue
    return total


# -- the report -------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    case: str
    link: str
    plain_s: float
    fill_s: float
    total: int

    @property
    def ratio(self) -> float:
        return self.plain_s / self.fill_s

    def row(self) -> str:
        plain = self.total / self.plain_s / MiB
        fill = self.total / self.fill_s / MiB
        mark = "ok" if self.ratio >= RATIO_GOAL else "below goal"
        return (
            f"{self.case:14} {self.link:14} {plain:10.0f} {fill:10.0f} {self.ratio:7.2f}x  {mark}"
        )


@dataclass(frozen=True)
class Resume:
    case: str
    link: str
    total: int
    on_disk: int  # bytes in the temporary directory after the kill
    served_at_kill: int  # what the hub had sent when the fill died
    served: int  # what the hub sent in all, both runs

    @property
    def refetched(self) -> int:
        return self.served - self.total

    @property
    def allowed(self) -> float:
        return RESUME_GOAL * self.total + CHUNK

    def row(self) -> str:
        in_flight = self.served_at_kill - self.on_disk
        dropped = self.refetched - in_flight
        mark = "ok" if self.refetched <= self.allowed else "above goal"
        return (
            f"{self.case:14} {self.link:14} {100 * self.on_disk / self.total:8.1f}% "
            f"{in_flight / MiB:10.1f} {dropped / MiB:8.1f} {self.refetched / MiB:11.1f} "
            f"{100 * self.refetched / self.total:9.2f}%  {mark}"
        )


def measure(bench: Bench, case: Case, link: str, repeats: int) -> Throughput:
    """Best of `repeats` for each, alternating so drifts hit both alike."""
    plain, fills = [], []
    for _ in range(repeats):
        plain.append(bench.time_plain(case))
        fills.append(bench.time_fill(case))
    return Throughput(case.name, link, min(plain), min(fills), case.total)


@contextmanager
def bench_hub(file_bytes: int, files: int) -> Iterator[tuple[StubHub, Case, Case]]:
    shards = [os.urandom(file_bytes) for _ in range(files)]
    hub = StubHub()
    one = hub.add_repo("bench/one", {"model-00001-of-00001.safetensors": shards[0]})
    names = [f"model-{i + 1:05d}-of-{files:05d}.safetensors" for i in range(files)]
    many = hub.add_repo("bench/many", dict(zip(names, shards, strict=True)))
    hub.start()
    try:
        yield hub, Case("1 file", one), Case(f"{files} files", many)
    finally:
        hub.stop()


def run(args: argparse.Namespace) -> tuple[list[Throughput], list[Resume]]:
    file_bytes = int(args.file_gib * GiB)
    size = f"{file_bytes / GiB:g} GiB"
    print(
        f"cachefill bench: {args.files} x {size} files, stub hub on 127.0.0.1, "
        f"{os.cpu_count()} CPUs"
    )
    print("setting up the stub hub (generating and hashing the files)...", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-cachefill-", dir=args.workdir))
    try:
        with bench_hub(file_bytes, args.files) as (hub, one, many):
            bench = Bench(hub, work)
            rows: list[Throughput] = []
            links = [("loopback", None)]
            if args.rate_mib > 0:
                links.append((f"{args.rate_mib:g} MiB/s", args.rate_mib * MiB))
            for link, rate in links:
                hub.rate = rate
                repeats = args.repeats if rate is None else 1
                for case in (one, many):
                    print(f"  timing {case.name} over {link}...", flush=True)
                    rows.append(measure(bench, case, link, repeats))
            resumes: list[Resume] = []
            if not args.no_resume:
                for link, rate in links:
                    hub.rate = rate
                    for case in (one, many):
                        print(f"  killing a fill of {case.name} over {link} at half...", flush=True)
                        resumes.append(bench.kill_resume(case, link))
        print()
        print("throughput (MiB/s; best of runs; ratio = cachefill / plain download):")
        print(
            f"{'case':14} {'link':14} {'plain':>10} {'cachefill':>10} {'ratio':>8}  "
            f"goal >= {RATIO_GOAL}x"
        )
        for row in rows:
            print(row.row())
        if resumes:
            print()
            print(
                f"kill-resume (MiB; killed at ~50% on disk; re-fetched = served "
                f"by the hub - total; goal <= 1% + one {CHUNK / MiB:g} MiB chunk = "
                f"{resumes[0].allowed / MiB:.1f} MiB):"
            )
            print(
                f"{'case':14} {'link':14} {'on disk':>9} {'in flight':>10} {'dropped':>8} "
                f"{'re-fetched':>11} {'of total':>10}"
            )
            for resume in resumes:
                print(resume.row())
            print(
                "(in flight: sent by the hub but not on disk when the fill died, in TCP "
                "buffers: lost to any downloader;\n dropped: the rest of the re-fetch, bytes "
                "on disk the resume did not keep)"
            )
        return rows, resumes
    finally:
        shutil.rmtree(work, ignore_errors=True)


def as_rows(throughputs: list[Throughput], resumes: list[Resume]) -> list[dict[str, object]]:
    """The figures in the form of `make bench`'s table (tests/bench/report.py)."""
    rows: list[dict[str, object]] = [
        {"area": "cache fill", "figure": f"{t.case} over {t.link}: fill time", "unit": "s",
         "value": t.fill_s, "baseline": t.plain_s, "goal": 1 / RATIO_GOAL,
         "note": "baseline: a plain download of the same files"}
        for t in throughputs
    ]  # fmt: skip
    rows += [
        {"area": "cache fill", "figure": f"{r.case} killed at half over {r.link}: re-fetched",
         "unit": "MiB",
         "value": r.refetched / MiB, "baseline": None, "goal": r.allowed / MiB,
         "note": "goal: 1% of the files + one chunk"}
        for r in resumes
    ]  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plain-get"]:
        endpoint, repo, commit, dest, *paths = argv[1:]
        plain_get(endpoint, repo, commit, Path(dest), paths)
        return 0
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_cachefill")
    parser.add_argument("--file-gib", type=float, default=1.0, help="size of each file (GiB)")
    parser.add_argument("--files", type=int, default=4, help="files in the many-file case")
    parser.add_argument(
        "--rate-mib", type=float, default=256.0, help="the limited link (MiB/s; 0: skip it)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs per loopback figure")
    parser.add_argument("--no-resume", action="store_true", help="skip the kill-resume figure")
    parser.add_argument("--workdir", default=None, help="where the temporary files go")
    parser.add_argument("--json", default=None, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    try:
        throughputs, resumes = run(args)
        if args.json:
            Path(args.json).write_text(json.dumps(as_rows(throughputs, resumes), indent=2))
    except BenchError as exc:
        print(f"bench_cachefill: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The local cluster's kube-apiserver taken down and started again, as the cluster scripts run it.

`hack/cluster-up.sh` cannot restart one missing component: it restarts in place only a
component whose flags changed, and treats a cluster with a component down as broken (it
stops everything and starts afresh, with an empty etcd). So a test that takes the API
server down restarts the very process it stopped: the same argv, environment and working
directory (read from /proc before the stop), started as `start_component` starts it
(`setsid ... >>log 2>&1 </dev/null &`, so it outlives the test and inherits none of the
test's file descriptors, such as a lock that `flock` holds), with its pid written to the
same pid file. The stamp of its flags still matches, so `hack/cluster-status.sh`,
`cluster-up.sh` and `cluster-down.sh` see it as their own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.cluster import Cluster, hack_value
from tests.support.wait import wait_for

NAME = "kube-apiserver"
# After SIGTERM the API server stops listening at once, but its process keeps the open
# watch connections until they end or its shutdown times out (a minute): it is SIGKILLed
# after this long, as a kubelet does after a pod's grace period (cluster-down.sh: 10 s).
STOP_GRACE_SECONDS = 5.0
READY_SECONDS = 90


@dataclass(frozen=True)
class Process:
    """A running process as /proc shows it: enough to start it again identically."""

    pid: int
    argv: list[str]
    env: dict[str, str]
    cwd: str


@dataclass
class Outage:
    """What one stop and start of the API server took, in seconds (filled in as it goes)."""

    old_pid: int
    new_pid: int = 0
    stop_seconds: float = 0.0  # from SIGTERM until the process was gone
    killed: bool = False  # whether it was still there after the grace, and SIGKILLed
    down_seconds: float = 0.0  # from SIGTERM until /readyz answered again


def pid_file() -> Path:
    return Path(hack_value("PID_DIR")) / f"{NAME}.pid"


def running(cluster: Cluster) -> Process:
    """The API server the cluster scripts started (its pid file, checked against /proc)."""
    pid = int(pid_file().read_text().strip())
    proc = Path(f"/proc/{pid}")
    try:
        argv = proc.joinpath("cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        environ = proc.joinpath("environ").read_bytes().rstrip(b"\0").split(b"\0")
        cwd = os.readlink(proc / "cwd")
    except FileNotFoundError as exc:
        raise AssertionError(f"{NAME} (pid {pid}) is not running") from exc
    args = [a.decode() for a in argv]
    if not args or args[0] != str(cluster.bin_dir / NAME):
        raise AssertionError(f"pid {pid} of {pid_file()} is not the cluster's {NAME}: {args[:1]}")
    env = dict(e.decode().split("=", 1) for e in environ if b"=" in e)
    return Process(pid=pid, argv=args, env=env, cwd=cwd)


def ready(cluster: Cluster) -> bool:
    result = cluster.kubectl("get", "--raw", "/readyz", check=False, timeout=5)
    return result.returncode == 0 and result.stdout.strip() == "ok"


def _gone(pid: int) -> bool:
    try:
        # A zombie (the test's own child) has an empty command line; a reused pid another.
        return Path(f"/proc/{pid}/cmdline").read_bytes() == b""
    except (FileNotFoundError, ProcessLookupError):
        return True


def _stop(pid: int, grace: float) -> bool:
    """SIGTERM, and SIGKILL after ``grace`` seconds; True if it had to be killed."""
    os.kill(pid, signal.SIGTERM)
    try:
        wait_for(lambda: _gone(pid), timeout=grace, interval=0.05, what=f"{NAME} to exit")
        return False
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: _gone(pid), timeout=10, interval=0.05, what=f"{NAME} to die")
        return True


def _start(process: Process) -> int:
    """Start it as hack/cluster-up.sh's start_component does; returns the new pid."""
    log = Path(hack_value("LOG_DIR")) / f"{NAME}.log"
    script = 'log="$1"; cd "$2"; shift 2; setsid "$@" >>"$log" 2>&1 </dev/null & echo $!'
    started = subprocess.run(
        ["bash", "-c", script, "bash", str(log), process.cwd, *process.argv],
        env=process.env,
        capture_output=True,
        text=True,
        check=True,
        close_fds=True,
        timeout=30,
    )
    pid = int(started.stdout.strip())
    pid_file().write_text(f"{pid}\n")
    return pid


@contextmanager
def apiserver_down(cluster: Cluster, *, grace: float = STOP_GRACE_SECONDS) -> Iterator[Outage]:
    """Stop the API server (SIGTERM, as cluster-down.sh does; SIGKILL after ``grace``
    seconds) and yield while it is down; then start it again, whatever the body did, and
    wait until it is ready.

    The ``Outage`` yielded is complete once the block has ended.
    """
    process = running(cluster)
    outage = Outage(old_pid=process.pid)
    stopped = time.monotonic()
    try:
        outage.killed = _stop(process.pid, grace)
        outage.stop_seconds = time.monotonic() - stopped
        yield outage
    finally:
        outage.new_pid = _start(process)
        try:
            wait_for(lambda: ready(cluster), timeout=READY_SECONDS, interval=0.1,
                     what=f"the restarted {NAME} to be ready")  # fmt: skip
        except AssertionError as exc:
            log = Path(hack_value("LOG_DIR")) / f"{NAME}.log"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise AssertionError(f"{exc}\n{NAME} log:\n{tail}") from exc
        outage.down_seconds = time.monotonic() - stopped


def open_locks(pid: int) -> list[str]:
    """The lock files (``*.lock``) process ``pid`` has open: a daemon that inherited one
    from the test (`flock`'s, the process kubelet's) would keep it locked for good."""
    targets = (os.path.realpath(fd) for fd in Path(f"/proc/{pid}/fd").iterdir())
    return sorted(t for t in targets if t.endswith(".lock"))

"""The process kubelet: cache-fill Job pods run for real against the stub hub, under the real
Job controller; termination messages follow the kubelet's rules; a process pod's missing
hostPath Directory holds it in ContainerCreating.

One agent runs for the whole session (the `process_kubelet` fixture of the conftest); each
test fills its own cache root, since the nodes' disks last as long as the session.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support.cluster import Cluster
from tests.support.nodes import (
    SCRATCH_TAINT,
    get_pod,
    kill_kubelet,
    revive_kubelet,
    scratch_node,
    waiting_reason,
)
from tests.support.process_kubelet import (
    COMPONENT_LABEL,
    FILL_COMPONENT,
    MESSAGE_FILE_LIMIT,
    PROCESS_LABEL,
    PROCESS_VALUE,
    ProcessKubelet,
)
from tests.support.stub_hub import StubHub, run_stub_hub
from tests.support.wait import holds_for, wait_for

from mistral_operator.cachefill.errors import ExitCode
from mistral_operator.core.revision import cache_key

REPO = "mistral-sim/Tiny-Fill"
SOURCE = f"hf://{REPO}"
MOUNT = "/cache"  # where the fill Job mounts the node's cache root
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
KEY = cache_key(SOURCE, "main")


def weights() -> dict[str, bytes]:
    rng = random.Random(11)
    return {
        "model-00001-of-00001.safetensors": rng.randbytes(1024 * 1024 + 17),
        "config.json": b'{"model_type": "mistral"}\n',
    }


@pytest.fixture
def hub() -> Iterator[StubHub]:
    with run_stub_hub() as stub:
        yield stub


@pytest.fixture
def node(cluster: Cluster) -> str:
    return f"{cluster.topology}-1"


@dataclass(frozen=True)
class Disk:
    """Where a test's fills go: a node, its cache root (a hostPath), and that on this machine."""

    node: str
    root: str
    local: Path


@pytest.fixture
def disk(node: str, namespace: str, process_kubelet: ProcessKubelet) -> Disk:
    """A cache root of the test's own: the session's nodes keep their disks."""
    root = f"/var/lib/mistral-operator/{namespace}/models"
    return Disk(node, root, process_kubelet.host_path(node, root))


def fill_job(name: str, disk: Disk, hub: StubHub, *, backoff_limit: int = 0) -> dict[str, Any]:
    """A cache-fill Job as the operator writes it: `mistral-operator cachefill` (never
    pulled: the process kubelet finds the console script on its PATH), with the product's
    cache-fill label, which hands the pod to the process kubelet."""
    container = {
        "name": "fill",
        "image": "registry.invalid/mistral-operator:test",
        "command": ["mistral-operator"],
        "args": [
            "cachefill",
            "--source",
            SOURCE,
            "--revision",
            "main",
            "--dest",
            f"{MOUNT}/{KEY}",
            "--retries",
            "0",
            "--retry-delay",
            "0.01",
            "--progress-interval",
            "0.2",
        ],
        "env": [{"name": "HF_ENDPOINT", "value": hub.url}],
        "volumeMounts": [{"name": "cache", "mountPath": MOUNT}],
        # The fill's one-line error is its last line of output.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"labels": {COMPONENT_LABEL: FILL_COMPONENT}},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"kubernetes.io/hostname": disk.node},
                    "tolerations": [GPU_TOLERATION],
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "cache",
                            "hostPath": {"path": disk.root, "type": "DirectoryOrCreate"},
                        }
                    ],
                },
            },
        },
    }


def create(cluster: Cluster, namespace: str, obj: dict[str, Any]) -> None:
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(obj))


def job_pods(cluster: Cluster, namespace: str, job: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = cluster.get_json("pods", "-n", namespace, "-l", f"job-name={job}")[
        "items"
    ]
    return sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"])


def job_condition(cluster: Cluster, namespace: str, job: str, kind: str) -> dict[str, Any] | None:
    obj: dict[str, Any] = cluster.get_json("job", job, "-n", namespace)
    for condition in obj.get("status", {}).get("conditions") or []:
        if condition["type"] == kind and condition["status"] == "True":
            return obj
    return None


def terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        state = status.get("state", {}).get("terminated")
        if state:
            return dict(state)
    return None


def test_a_fill_job_downloads_into_the_nodes_directory_and_completes(
    cluster: Cluster, namespace: str, hub: StubHub, process_kubelet: ProcessKubelet, disk: Disk
) -> None:
    files = weights()
    hub.add_repo(REPO, files)
    started = time.monotonic()
    create(cluster, namespace, fill_job("fill", disk, hub))

    job = wait_for(
        lambda: job_condition(cluster, namespace, "fill", "Complete"),
        timeout=30,
        what="the fill Job to complete",
    )
    elapsed = time.monotonic() - started
    assert job["status"]["succeeded"] == 1
    (pod,) = job_pods(cluster, namespace, "fill")
    assert pod["spec"]["nodeName"] == disk.node
    assert pod["status"]["phase"] == "Succeeded"
    state = terminated(pod)
    assert state is not None
    assert state["exitCode"] == 0
    assert state["reason"] == "Completed"
    assert "message" not in state  # a success falls back to no log

    dest = disk.local / KEY
    for path, data in files.items():
        assert (dest / path).read_bytes() == data
    manifest = json.loads((dest / ".mistral-cache.json").read_text())
    assert manifest["source"] == SOURCE
    assert {f["path"] for f in manifest["files"]} == set(files)
    # Only that node's disk was written.
    filled = [d.name for d in process_kubelet.root.iterdir() if (d / disk.root[1:]).exists()]
    assert filled == [disk.node]
    # Its log holds the fill's progress lines, and the API server serves it.
    assert "mistral-cachefill-progress " in process_kubelet.log_path(pod).read_text()
    logs = cluster.kubectl("logs", "-n", namespace, pod["metadata"]["name"]).stdout
    assert any(line.startswith("mistral-cachefill-progress {") for line in logs.splitlines())
    print(f"fill Job complete in {elapsed:.1f}s")


def test_a_failed_fill_fails_the_pod_with_its_exit_code_and_the_job_retries(
    cluster: Cluster, namespace: str, hub: StubHub, disk: Disk
) -> None:
    # The repository is not there yet: the fill exits "not found".
    started = time.monotonic()
    create(cluster, namespace, fill_job("fill", disk, hub, backoff_limit=2))

    def first_failed() -> dict[str, Any] | None:
        pods = job_pods(cluster, namespace, "fill")
        return pods[0] if pods and pods[0]["status"].get("phase") == "Failed" else None

    pod = wait_for(first_failed, timeout=20, what="the first fill pod to fail")
    state = terminated(pod)
    assert state is not None
    assert state["exitCode"] == ExitCode.NOT_FOUND
    assert state["reason"] == "Error"
    # No message file was written: the tail of the log (FallbackToLogsOnError).
    assert state["message"].splitlines()[-1].startswith("cachefill: not found")
    failed_at = time.monotonic() - started

    # The hub gets the repository; the Job controller retries on its own (after its
    # back-off, 10 s for the first retry) and the second pod fills.
    hub.add_repo(REPO, weights())
    job = wait_for(
        lambda: job_condition(cluster, namespace, "fill", "Complete"),
        timeout=30,
        what="the retried fill Job to complete",
    )
    assert job["status"]["failed"] == 1
    assert job["status"]["succeeded"] == 1
    assert len(job_pods(cluster, namespace, "fill")) == 2
    assert (disk.local / KEY / ".mistral-cache.json").is_file()
    print(f"first pod Failed after {failed_at:.1f}s, Job Complete after "
          f"{time.monotonic() - started:.1f}s")  # fmt: skip


def test_a_corrupt_download_fails_the_job_once_its_backoff_limit_is_spent(
    cluster: Cluster, namespace: str, hub: StubHub, disk: Disk
) -> None:
    hub.add_repo(REPO, weights())
    hub.corrupt(REPO, "model-00001-of-00001.safetensors", offset=1000)
    create(cluster, namespace, fill_job("fill", disk, hub, backoff_limit=0))

    job = wait_for(
        lambda: job_condition(cluster, namespace, "fill", "Failed"),
        timeout=30,
        what="the fill Job to fail",
    )
    assert job["status"]["failed"] == 1
    (pod,) = job_pods(cluster, namespace, "fill")
    state = terminated(pod)
    assert state is not None
    assert state["exitCode"] == ExitCode.CHECKSUM_MISMATCH
    assert "checksum mismatch in model-00001-of-00001.safetensors" in state["message"]
    assert not (disk.local / KEY).exists()


# -- termination messages ---------------------------------------------------------

# Writes its message file (named twice, by an argument and by the environment, as a
# program is told where it is) and some output on both streams, then exits.
MESSAGE_SCRIPT = textwrap.dedent(
    """
    import os, sys
    path, message, code = sys.argv[1], sys.argv[2], int(sys.argv[3])
    assert os.environ["MESSAGE_PATH"] == path, (os.environ["MESSAGE_PATH"], path)
    print("out 1", flush=True)
    print("err 2", file=sys.stderr, flush=True)
    print("out 3", flush=True)
    if message:
        with open(path, "w") as f:
            f.write(message)
    sys.exit(code)
    """
)


def message_pod(
    name: str,
    node: str,
    *,
    message: str,
    code: int,
    policy: str = "FallbackToLogsOnError",
    path: str | None = None,
) -> dict[str, Any]:
    """A process pod whose `python` (the image's, here the virtual environment's) writes
    ``message`` to its termination message file and exits with ``code``."""
    container: dict[str, Any] = {
        "name": "main",
        "image": "registry.invalid/python:test",
        "command": ["python", "-c", MESSAGE_SCRIPT],
        "args": [path or "/dev/termination-log", message, str(code)],
        "env": [{"name": "MESSAGE_PATH", "value": path or "/dev/termination-log"}],
        "terminationMessagePolicy": policy,
    }
    if path:
        container["terminationMessagePath"] = path
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {PROCESS_LABEL: PROCESS_VALUE}},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [GPU_TOLERATION],
            "containers": [container],
        },
    }


def test_termination_messages_follow_the_kubelets_rules(
    cluster: Cluster, namespace: str, process_kubelet: ProcessKubelet, node: str
) -> None:
    long_message = "x" * 5000 + " the end"
    pods = {
        # The file wins over the log, and only its last 4096 bytes are kept.
        "from-file": message_pod("from-file", node, message=long_message, code=3),
        # An empty file and a failure: the log's tail, both streams in their order.
        "from-log": message_pod("from-log", node, message="", code=1),
        # An empty file and a success: no message.
        "quiet": message_pod("quiet", node, message="", code=0),
        # The policy File never reads the log.
        "file-only": message_pod("file-only", node, message="", code=2, policy="File"),
        # A path of the container's choosing; a message is kept on success too.
        "own-path": message_pod(
            "own-path", node, message="done: 3 files", code=0, path="/var/run/fill/message"
        ),
    }
    for pod in pods.values():
        create(cluster, namespace, pod)

    def finished() -> dict[str, dict[str, Any]] | None:
        states = {}
        for name in pods:
            state = terminated(get_pod(cluster, namespace, name) or {})
            if state is None:
                return None
            states[name] = state
        return states

    states = wait_for(finished, timeout=30, what="every message pod to finish")
    assert states["from-file"]["exitCode"] == 3
    assert states["from-file"]["message"] == long_message[-MESSAGE_FILE_LIMIT:]
    assert states["from-log"]["exitCode"] == 1
    assert states["from-log"]["message"] == "out 1\nerr 2\nout 3"
    assert "message" not in states["quiet"]
    assert states["quiet"]["reason"] == "Completed"
    assert states["file-only"]["exitCode"] == 2
    assert "message" not in states["file-only"]
    assert states["own-path"]["message"] == "done: 3 files"


# -- logs through the API server ----------------------------------------------------

# Prints numbered lines on both streams, then waits for a file (its argument: a path
# the process kubelet translates) before its last line.
TALKER_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    for i in range(1, 7):
        print(f"line {i}", file=sys.stderr if i % 2 else sys.stdout, flush=True)
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.05)
    print("done", flush=True)
    """
)


def test_kubectl_logs_shows_a_process_pods_output_running_and_finished(
    cluster: Cluster, namespace: str, disk: Disk
) -> None:
    pod = message_pod("talker", disk.node, message="", code=0)
    container = pod["spec"]["containers"][0]
    container["args"] = ["-c", TALKER_SCRIPT, "/data/go"]
    container["command"] = ["python"]
    del container["env"]
    container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    pod["spec"]["volumes"] = [
        {"name": "data", "hostPath": {"path": disk.root, "type": "DirectoryOrCreate"}}
    ]
    create(cluster, namespace, pod)
    wait_for(
        lambda: (
            (get_pod(cluster, namespace, "talker") or {}).get("status", {}).get("phase")
            == "Running"
        ),
        timeout=20,
        what="the pod to run",
    )
    lines = [f"line {i}" for i in range(1, 7)]

    def logs(*args: str) -> str:
        return cluster.kubectl("logs", "-n", namespace, "talker", *args).stdout

    # While it runs: all of it, its tail, and the API path the operator reads.
    wait_for(lambda: logs().splitlines() == lines, timeout=10, what="all six lines")
    assert logs("--tail=2").splitlines() == lines[-2:]
    raw = cluster.kubectl(
        "get", "--raw", f"/api/v1/namespaces/{namespace}/pods/talker/log?tailLines=5"
    ).stdout
    assert raw.splitlines() == lines[-5:]
    assert logs("--limit-bytes=6") == "line 1"
    # Following: the stream ends with the container.
    follow = subprocess.Popen(
        [str(cluster.bin_dir / "kubectl"), "logs", "-f", "-n", namespace, "talker"],
        env=cluster.env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1)
        (disk.local / "go").touch()
        out, _ = follow.communicate(timeout=20)
    finally:
        follow.kill()
    assert out.splitlines() == [*lines, "done"]
    assert logs().splitlines() == [*lines, "done"]


# -- deletion, volumes, dead kubelets -----------------------------------------------


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def running(cluster: Cluster, namespace: str) -> dict[str, Any] | None:
    """The fill Job's first pod, once it runs."""
    pods = job_pods(cluster, namespace, "fill")
    return pods[0] if pods and pods[0]["status"].get("phase") == "Running" else None


def test_deleting_a_fill_pod_kills_its_process(
    cluster: Cluster, namespace: str, hub: StubHub, disk: Disk
) -> None:
    hub.add_repo(REPO, weights())
    hub.rate = 64 * 1024  # about 16 s for the whole repository: still running when deleted
    create(cluster, namespace, fill_job("fill", disk, hub))

    pod = wait_for(lambda: running(cluster, namespace), timeout=20, what="the fill pod to run")
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] is True
    assert "running" in status["state"]
    pid = int(status["containerID"].removeprefix("process://"))
    assert pid_alive(pid)
    wait_for(lambda: hub.bytes_served(REPO) > 0, timeout=10, what="the download to start")

    name = pod["metadata"]["name"]
    started = time.monotonic()
    cluster.kubectl("delete", "pod", name, "-n", namespace, "--wait=false")
    wait_for(lambda: not pid_alive(pid), timeout=10, what="the fill process to be killed")
    # The kubelet confirms the deletion once the process is gone.
    wait_for(lambda: get_pod(cluster, namespace, name) is None, timeout=10, what="the pod gone")
    print(f"process killed and pod gone in {time.monotonic() - started:.1f}s")
    assert not (disk.local / KEY).exists()


def test_a_process_pod_waits_in_container_creating_until_its_host_path_exists(
    cluster: Cluster, namespace: str, process_kubelet: ProcessKubelet, disk: Disk
) -> None:
    pod = message_pod("reader", disk.node, message="read", code=0)
    container = pod["spec"]["containers"][0]
    container["volumeMounts"] = [{"name": "model", "mountPath": "/model", "readOnly": True}]
    path = f"{disk.root}/{KEY}"
    pod["spec"]["volumes"] = [{"name": "model", "hostPath": {"path": path, "type": "Directory"}}]
    create(cluster, namespace, pod)

    def get() -> dict[str, Any]:
        return get_pod(cluster, namespace, "reader") or {}

    wait_for(
        lambda: waiting_reason(get()) == "ContainerCreating", timeout=20, what="ContainerCreating"
    )
    events = wait_for(
        lambda: cluster.get_json(
            "events", "-n", namespace,
            "--field-selector", "involvedObject.name=reader,reason=FailedMount",
        )["items"],
        timeout=10,
        what="a FailedMount event",
    )  # fmt: skip
    assert events[0]["message"] == (
        'MountVolume.SetUp failed for volume "model" : '
        f"hostPath type check failed: {path} is not a directory"
    )
    holds_for(
        lambda: waiting_reason(get()) == "ContainerCreating",
        duration=2,
        what="the pod staying ContainerCreating",
    )

    process_kubelet.host_path(disk.node, path).mkdir(parents=True)
    state = wait_for(lambda: terminated(get()), timeout=20, what="the pod to run to its end")
    assert state["exitCode"] == 0
    assert state["message"] == "read"


def test_a_fill_pod_on_a_dead_kubelets_node_is_left_alone_until_the_kubelet_returns(
    cluster: Cluster, namespace: str, hub: StubHub, disk: Disk
) -> None:
    hub.add_repo(REPO, weights())
    hub.rate = 32 * 1024  # about 32 s for the whole repository: still running throughout
    with scratch_node(cluster) as node:
        job = fill_job("fill", Disk(node, disk.root, disk.local), hub)
        job["spec"]["template"]["spec"]["tolerations"].append(
            {"key": SCRATCH_TAINT, "operator": "Exists"}
        )
        create(cluster, namespace, job)
        pod = wait_for(lambda: running(cluster, namespace), timeout=20, what="the fill pod to run")
        name = pod["metadata"]["name"]
        pid = int(pod["status"]["containerStatuses"][0]["containerID"].removeprefix("process://"))
        kill_kubelet(cluster, node)

        # As on a real node: the container outlives its kubelet, and nobody confirms
        # the graceful deletion.
        cluster.kubectl("delete", "pod", name, "-n", namespace, "--wait=false")

        def left_alone() -> bool:
            obj = get_pod(cluster, namespace, name)
            return (
                pid_alive(pid)
                and obj is not None
                and bool(obj["metadata"].get("deletionTimestamp"))
                and obj["status"].get("phase") == "Running"
            )

        holds_for(
            left_alone,
            duration=3,
            what="the fill process running and its pod Terminating on a dead kubelet's node",
            detail=lambda: (pid_alive(pid), get_pod(cluster, namespace, name)),
        )

        revive_kubelet(cluster, node)
        wait_for(lambda: not pid_alive(pid), timeout=10, what="the returning kubelet's kill")
        wait_for(lambda: get_pod(cluster, namespace, name) is None, timeout=10, what="the pod gone")

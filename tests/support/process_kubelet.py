"""The test platform's second kubelet: real local processes, and the hostPath mount check.

kwok simulates every pod in the local cluster; a cache fill, though, must be a real
download into a real directory, and a serving pod must wait for its weights as on a
real node. `ProcessKubelet` is one agent per test session (tests/integration and
tests/e2e start it, see `shared_kubelet`) that watches pods in all namespaces and does
what a node's kubelet would for two kinds of pods, each node's disk being the local
directory ``<root>/<node>``:

**Pods it runs.** Pods labelled ``mistral-operator.dev/component=cache-fill`` or ``cache-gc`` (the
operator's fill and GC Jobs) or ``sim.mistral-operator.dev/kubelet=process`` (for tests); kwok's
stages skip both (hack/kwok/stages.yaml). Once such a pod is bound to a node it:

- runs the first (only) container's ``command`` + ``args`` on this machine, with the
  container's ``envFrom`` (``secretRef``, ``configMapRef``) and ``env`` (``value``,
  ``secretKeyRef``, ``configMapKeyRef``, ``fieldRef``)
  and Kubernetes ``$(VAR)`` expansion. No image is pulled: the command must name a
  program of this machine, found on a ``PATH`` that starts with the directory of this
  Python's executable (the virtual environment's ``bin``), as an image would have its
  programs on its ``PATH``: ``mistral-operator cachefill ...`` runs the console script;
- maps each ``hostPath`` volume to ``<root>/<node>/<hostPath.path>``, each
  ``persistentVolumeClaim`` to ``<claims_root>/<namespace>/<claim>`` (the claim's
  storage, whichever node the pod runs on; a ``subPath`` in it is made if missing, as
  the kubelet does) and each ``emptyDir`` to a per-pod directory, and, since a local
  process has no mount
  namespace, translates paths under a ``volumeMount``'s ``mountPath`` in
  args, env values and ``workingDir`` to that directory (the longest mount wins); the
  container's ``terminationMessagePath`` (default ``/dev/termination-log``) is a file of
  the pod's own, translated the same way;
- holds the pod in ContainerCreating, with a ``FailedMount`` event, while a
  ``hostPath`` of type ``Directory`` is missing in the node's directory;
- writes the pod status as a kubelet does: Running with the container running,
  then Succeeded or Failed with the exit code and the termination message (the
  message file's last 4096 bytes; with ``terminationMessagePolicy:
  FallbackToLogsOnError``, an empty file and a non-zero exit, the tail of the log);
  ``restartPolicy: OnFailure``/``Always`` restart the process in the same pod;
- writes the process's stdout and stderr, interleaved, to one log file of the pod's,
  and serves it as the kubelet API's ``containerLogs`` (``tailLines``, ``limitBytes``,
  ``follow``, ``previous``) at the node's InternalIP and kubelet port
  (``status.daemonEndpoints``), where the API server sends ``kubectl logs``;
- on a graceful delete sends SIGTERM to the process group, SIGKILL after the grace
  period, then confirms the deletion (grace 0), as a kubelet does; a pod deleted
  outright has its process killed;
- does nothing for pods on a node whose kubelet is dead or NotReady (the node is
  not kwok's: see tests/support/nodes.py): no start, no status, no confirmed
  deletion, while a running process keeps running, as containers outlive their
  kubelet. It takes over again once the node is revived.

**Pods kwok runs that mount a hostPath Directory.** kwok cannot look at a disk, so its
pod stages wait for such a pod until it has the annotation
``sim.mistral-operator.dev/volumes-mounted``. The agent plays the volume manager: while
a ``hostPath`` volume of type ``Directory`` is missing in the node's directory the pod
stays ContainerCreating with a ``FailedMount`` event, as on a real node; once all
exist the agent sets the annotation and kwok starts the pod. Without a running agent
such pods stay Pending.

Only one agent may run against a cluster at a time (two would both run a pod): `start`
takes a lock file in the cluster's state directory, waiting for another session's
agent to finish. Outside pytest: ``python -m tests.support.process_kubelet --root DIR
--kubeconfig FILE``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import http.server
import json
import logging
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.support.cluster import Cluster
from tests.support.nodes import KUBELET_DOWN, KUBELET_LABEL, KWOK_LABEL, KWOK_VALUE

log = logging.getLogger(__name__)

PROCESS_LABEL = KUBELET_LABEL  # on a pod: "process"; on a node: "down" (tests.support.nodes)
PROCESS_VALUE = "process"
# The operator's cache-fill and cache-GC pods carry this product label; the agent runs them.
COMPONENT_LABEL = "mistral-operator.dev/component"
FILL_COMPONENT = "cache-fill"
PROCESS_COMPONENTS = frozenset({FILL_COMPONENT, "cache-gc"})
MOUNTED_ANNOTATION = "sim.mistral-operator.dev/volumes-mounted"
# kwok's stages hold a pod with this annotation (see "Held pods" in hack/kwok/stages.yaml);
# the agent sets it, and HELD_BY, on a pod whose model cannot load.
HOLD_ANNOTATION = "sim.mistral-operator.dev/hold"
HELD_BY_ANNOTATION = "sim.mistral-operator.dev/held-by"
HELD_BY_AGENT = "process-kubelet"
CACHE_KEY_LABEL = "mistral-operator.dev/cache-key"
MODEL_VOLUME = "model"  # the serving pod's weights (core/render.py)
MODEL_MOUNT = "/model"
MANIFEST = ".mistral-cache.json"
DEFAULT_MESSAGE_PATH = "/dev/termination-log"
# A pod's own files, in its directory: the container's log and its termination message.
LOG_FILE = "container.log"
MESSAGE_FILE = "termination-log"
# The kubelet's limits on a termination message: the last 4096 bytes of the file, and
# for FallbackToLogsOnError the last 80 lines of the log, at most 2048 bytes.
MESSAGE_FILE_LIMIT = 4096
LOG_TAIL_LINES = 80
LOG_TAIL_BYTES = 2048
RESTART_BACKOFF_SECONDS = 1.0  # a real kubelet starts at 10 s; tests want it quick
WATCH_SECONDS = 30
NODE_RECHECK_SECONDS = 1.0  # how long a node's health (its labels) is taken as read
TICK_SECONDS = 0.1
LOCK_FILE = "process-kubelet.lock"  # in the cluster's state directory
LOCK_WAIT_SECONDS = 900.0  # how long to wait for another session's agent
DRAIN_SECONDS = 30.0  # how long `stop` waits for deleted pods to go
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")

# -- pure helpers -----------------------------------------------------------------


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: known names are replaced, `$$` escapes a `$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR.sub(replace, text)


def translate_path(value: str, mounts: Sequence[tuple[str, Path]]) -> str:
    """Map a container path (or `--flag=path`) under a mount to the directory behind it.

    ``mounts`` is (mountPath, local directory); the longest matching mountPath wins.
    Anything else is returned as it is.
    """
    prefix, eq, rest = value.partition("=")
    if eq and prefix.startswith("-"):
        return f"{prefix}={translate_path(rest, mounts)}"
    for mount_path, local in sorted(mounts, key=lambda m: len(m[0]), reverse=True):
        root = mount_path.rstrip("/") or "/"
        if value == root:
            return str(local)
        if value.startswith(root.rstrip("/") + "/"):
            return str(local / value[len(root.rstrip("/")) + 1 :])
    return value


def tail_message(data: bytes, *, lines: int = LOG_TAIL_LINES, limit: int = LOG_TAIL_BYTES) -> str:
    """The tail of a log as the kubelet's FallbackToLogsOnError takes it."""
    kept = b"\n".join(data.rstrip(b"\n").split(b"\n")[-lines:])
    return kept[-limit:].decode("utf-8", "replace")


def host_dir(root: Path, node: str, host_path: str) -> Path:
    """Where a node's `hostPath` lives on this machine: `<root>/<node>/<path>`."""
    return root / node / host_path.lstrip("/")


def exit_code_of(returncode: int) -> int:
    """A process's exit status as a container runtime reports it (signal N: 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def message_path(container: Mapping[str, Any]) -> str:
    """Where the container writes its termination message (a path inside the container)."""
    return str(container.get("terminationMessagePath") or DEFAULT_MESSAGE_PATH)


def runs_as_process(pod: Mapping[str, Any]) -> bool:
    """Whether the agent runs the pod (a cache fill, or a test's process pod)."""
    labels = pod["metadata"].get("labels") or {}
    return bool(
        labels.get(PROCESS_LABEL) == PROCESS_VALUE
        or labels.get(COMPONENT_LABEL) in PROCESS_COMPONENTS
    )


def directory_volumes(pod: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(volume name, host path) of the pod's `hostPath` volumes of type Directory."""
    return [
        (v["name"], v["hostPath"]["path"])
        for v in pod["spec"].get("volumes") or []
        if (v.get("hostPath") or {}).get("type") == "Directory"
    ]


def claim_volumes(pod: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(volume name, claim name) of the pod's `persistentVolumeClaim` volumes."""
    return [
        (v["name"], v["persistentVolumeClaim"]["claimName"])
        for v in pod["spec"].get("volumes") or []
        if v.get("persistentVolumeClaim")
    ]


def needs_mount_check(pod: Mapping[str, Any]) -> bool:
    """A kwok-run pod that kwok's stages hold until the agent has checked its volumes.

    The same test as the "mounting" expression of hack/kwok/stages.yaml: a hostPath
    Directory or a claim.
    """
    meta = pod["metadata"]
    return (
        not runs_as_process(pod)
        and not meta.get("deletionTimestamp")
        and MOUNTED_ANNOTATION not in (meta.get("annotations") or {})
        and bool(directory_volumes(pod) or claim_volumes(pod))
    )


def held_for_load(pod: Mapping[str, Any]) -> bool:
    """A kwok-run pod the agent holds crash-looping until its server could load its weights."""
    annotations = pod["metadata"].get("annotations") or {}
    return annotations.get(HELD_BY_ANNOTATION) == HELD_BY_AGENT


def model_path_arg(pod: Mapping[str, Any]) -> str | None:
    """The `--model-path` a serving pod's SGLang loads, if it has one."""
    for container in pod["spec"].get("containers") or []:
        args = [*(container.get("command") or []), *(container.get("args") or [])]
        for i, arg in enumerate(args):
            if arg == "--model-path" and i + 1 < len(args):
                return str(args[i + 1])
            if arg.startswith("--model-path="):
                return str(arg.split("=", 1)[1])
    return None


def weights_problem(directory: Path) -> str | None:
    """Why SGLang could not load a local copy from `directory`, or None when it could.

    Like the server: a missing directory, a file the cache's manifest lists that is
    missing or of another size (a wiped or half-removed copy). A byte changed inside a
    file of the right size loads silently, as it would on a real node.
    """
    if not directory.is_dir():
        return f"{directory.name}: no such directory"
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None  # not a cache's copy (pvc:// weights): nothing more to check
    for entry in manifest.get("files") or []:
        path = directory / str(entry.get("path"))
        try:
            size = path.stat().st_size
        except OSError:
            return f"{entry.get('path')}: no such file"
        if size != entry.get("size"):
            return f"{entry.get('path')}: {size} bytes, expected {entry.get('size')}"
    return None


def container_path(inherited: str | None) -> str:
    """A container's PATH: this Python's `bin` first (console scripts such as
    `mistral-operator`, as an image has its programs on its PATH), then ``inherited``."""
    return os.pathsep.join([str(Path(sys.executable).parent), inherited or "/usr/bin:/bin"])


def read_message_file(path: Path) -> str:
    """A termination message file as the kubelet reads it: its last 4096 bytes."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - MESSAGE_FILE_LIMIT))
            data = f.read()
    except FileNotFoundError:
        return ""
    return data.decode("utf-8", "replace")


def _container_entry(
    container: Mapping[str, Any],
    state: dict[str, Any],
    *,
    ready: bool = False,
    restart_count: int = 0,
) -> dict[str, Any]:
    """One entry of `status.containerStatuses`, for ``container`` in ``state``."""
    return {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "ready": ready,
        "started": "running" in state,
        "restartCount": restart_count,
        "state": state,
    }


def _conditions(ready: bool, reason: str | None = None) -> list[dict[str, Any]]:
    stamp = now()
    out = []
    for kind, status in (
        ("PodReadyToStartContainers", True),
        ("Initialized", True),
        ("Ready", ready),
        ("ContainersReady", ready),
        ("PodScheduled", True),
    ):
        cond: dict[str, Any] = {
            "type": kind,
            "status": "True" if status else "False",
            "lastTransitionTime": stamp,
        }
        if not status and reason:
            cond["reason"] = reason
        out.append(cond)
    return out


# -- the agent --------------------------------------------------------------------


@dataclass
class _Run:
    """One pod's container process and what the kubelet remembers of it."""

    node: str
    pod_dir: Path
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    restart_count: int = 0
    last_terminated: dict[str, Any] | None = None
    restart_at: float | None = None
    finished: bool = False
    term_sent_at: float | None = None
    log_offset: int = 0  # where this container instance's part of the log starts
    previous_log: tuple[int, int] | None = None  # the previous instance's part, if any

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _read_data(
    api: client.CoreV1Api, namespace: str, kind: str, ref: Mapping[str, Any], *, secret: bool
) -> dict[str, str] | None:
    """The data of the Secret or ConfigMap ``ref`` names (None: missing and optional)."""
    read = api.read_namespaced_secret if secret else api.read_namespaced_config_map
    try:
        obj = json.loads(read(ref["name"], namespace, _preload_content=False).data)
    except ApiException as exc:
        if exc.status == 404 and ref.get("optional"):
            return None
        raise _ConfigError(f"{kind} {ref['name']}: {exc.reason}") from exc
    data = {k: str(v) for k, v in (obj.get("data") or {}).items()}
    return {k: base64.b64decode(v).decode() for k, v in data.items()} if secret else data


class ProcessKubelet:
    """Runs pods' containers as local processes and checks hostPath mounts; see the module
    docstring. One per cluster at a time: use `shared_kubelet` in tests."""

    def __init__(self, cluster: Cluster, root: Path, claims_root: Path | None = None) -> None:
        self.cluster = cluster
        self.root = root
        # The storage of PersistentVolumeClaims: beside the nodes' disks unless given.
        self.claims_root = claims_root if claims_root is not None else root.parent / "claims"
        self._lock = threading.Lock()
        self._pods: dict[str, dict[str, Any]] = {}  # uid -> the latest pod seen (ours only)
        self._gone: set[str] = set()  # uids deleted from the API
        self._runs: dict[str, _Run] = {}
        self._reported: set[str] = set()  # pods whose wait (mount, config) was reported once
        self._mounted: set[str] = set()  # kwok-run pods given the mounted annotation
        self._confirmed: set[str] = set()
        self._nodes: dict[str, tuple[float, dict[str, Any] | None]] = {}  # name -> (read at, Node)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock_file: IO[str] | None = None
        self._log_servers: dict[str, _KubeletServer | None] = {}  # node -> its server

    # -- lifecycle ------------------------------------------------------------

    @property
    def lock_path(self) -> Path:
        """The lock that keeps a second agent off the cluster (its state directory)."""
        return self.cluster.kubeconfig.parent / LOCK_FILE

    def start(self, *, lock_wait: float = LOCK_WAIT_SECONDS) -> ProcessKubelet:
        self._take_lock(lock_wait)
        self.root.mkdir(parents=True, exist_ok=True)
        self._threads = [
            threading.Thread(target=self._watch_loop, name="kubelet-watch", daemon=True),
            threading.Thread(target=self._sync_loop, name="kubelet", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, *, drain: float = DRAIN_SECONDS) -> None:
        """Stop, once the pods being deleted are gone (at most ``drain`` seconds).

        Processes still running then are killed; their pods are left as they are (the
        next agent reports them lost, as a kubelet does for containers its runtime lost).
        """
        deadline = time.monotonic() + drain
        api = self._api()
        while time.monotonic() < deadline and self._deletions_pending(api):
            time.sleep(0.2)
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            # The watch thread may sit in a read for up to WATCH_SECONDS; as a daemon, it
            # ends on its own and writes nothing.
            if thread.name != "kubelet-watch":
                thread.join(timeout=10)
        for server in self._log_servers.values():
            if server is not None:
                server.shutdown()
                server.server_close()
        for run in self._runs.values():
            self._signal(run, signal.SIGKILL)
            if run.process is not None:
                run.process.wait(timeout=10)
        self._release_lock()

    def __enter__(self) -> ProcessKubelet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _take_lock(self, wait: float) -> None:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.lock_path.open("a+")
        deadline = time.monotonic() + wait
        warned = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                if time.monotonic() >= deadline:
                    handle.close()
                    raise RuntimeError(
                        f"another process kubelet (pid {holder}) still runs against this "
                        f"cluster after {wait:.0f}s; two would both run each pod"
                    ) from None
                if not warned:
                    log.warning("process kubelet: waiting for the agent of pid %s", holder)
                    warned = True
                time.sleep(1)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_file = handle

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing drops the flock
            self._lock_file = None

    def _deletions_pending(self, api: client.CoreV1Api) -> bool:
        """Whether a pod the agent runs is being deleted, or soon will be (its namespace
        is going), on a node whose kubelet is up."""
        with self._lock:
            pods = [p for p in self._pods.values() if runs_as_process(p)]
        if not pods:
            return False
        going: dict[str, bool] = {}
        for pod in pods:
            node = pod["spec"].get("nodeName")
            if not node or not self._kubelet_up(api, node):
                continue
            if pod["metadata"].get("deletionTimestamp"):
                return True
            namespace = pod["metadata"]["namespace"]
            if namespace not in going:
                going[namespace] = self._namespace_going(api, namespace)
            if going[namespace]:
                return True
        return False

    @staticmethod
    def _namespace_going(api: client.CoreV1Api, namespace: str) -> bool:
        try:
            obj = json.loads(api.read_namespace(namespace, _preload_content=False).data)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return bool(obj["metadata"].get("deletionTimestamp"))

    # -- where things live ----------------------------------------------------

    def node_dir(self, node: str) -> Path:
        return self.root / node

    def host_path(self, node: str, path: str) -> Path:
        """The local directory behind `hostPath: {path}` on `node`."""
        return host_dir(self.root, node, path)

    def claim_dir(self, namespace: str, claim: str) -> Path:
        """The local directory behind a PersistentVolumeClaim, on every node alike."""
        return self.claims_root / namespace / claim

    def pod_dir(self, node: str, namespace: str, name: str, uid: str) -> Path:
        """A pod's own files: its log, termination message file and emptyDir volumes."""
        return self.node_dir(node) / ".pods" / f"{namespace}_{name}_{uid}"

    def log_path(self, pod: Mapping[str, Any]) -> Path:
        """The log (stdout and stderr, interleaved) of a pod the agent runs."""
        meta = pod["metadata"]
        node = pod["spec"]["nodeName"]
        return self.pod_dir(node, meta["namespace"], meta["name"], meta["uid"]) / LOG_FILE

    # -- watching -------------------------------------------------------------

    def _api(self) -> client.CoreV1Api:
        return client.CoreV1Api(config.new_client_from_config(str(self.cluster.kubeconfig)))

    def _watch_loop(self) -> None:
        """List and watch every pod; keep those the agent runs or has to check."""
        api = self._api()
        while not self._stop.is_set():
            try:
                version = self._relist(api)
                stream = watch.Watch().stream(
                    api.list_pod_for_all_namespaces,
                    resource_version=version,
                    timeout_seconds=WATCH_SECONDS,
                )
                for event in stream:
                    if self._stop.is_set():
                        return
                    if event["type"] == "ERROR":
                        break  # most likely 410 Gone: list again
                    self._store(event["raw_object"], deleted=event["type"] == "DELETED")
            except Exception as exc:  # noqa: BLE001 - the watch must outlive API errors
                log.warning("process kubelet: watching pods failed, listing again: %s", exc)
                self._stop.wait(0.5)

    def _relist(self, api: client.CoreV1Api) -> str:
        response = api.list_pod_for_all_namespaces(_preload_content=False)
        data = json.loads(response.data)
        items = data.get("items") or []
        present = {p["metadata"]["uid"] for p in items}
        with self._lock:
            for uid in list(self._pods):
                if uid not in present:
                    del self._pods[uid]
                    self._gone.add(uid)
            for pod in items:
                self._keep(pod)
        self._wake.set()
        return str(data["metadata"]["resourceVersion"])

    def _store(self, pod: dict[str, Any], *, deleted: bool) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            if deleted:
                if self._pods.pop(uid, None) is not None or uid in self._runs:
                    self._gone.add(uid)
            else:
                self._keep(pod)
        self._wake.set()

    def _keep(self, pod: dict[str, Any]) -> None:
        """Hold the pod if it is the agent's business; drop it once it is not (lock held)."""
        uid = pod["metadata"]["uid"]
        if runs_as_process(pod) or needs_mount_check(pod) or held_for_load(pod):
            self._pods[uid] = pod
        else:
            self._pods.pop(uid, None)

    # -- the kubelet's loop ---------------------------------------------------

    def _sync_loop(self) -> None:
        api = self._api()
        while not self._stop.is_set():
            self._wake.wait(TICK_SECONDS)
            self._wake.clear()
            with self._lock:
                pods = list(self._pods.values())
                gone, self._gone = self._gone, set()
            for uid in gone:
                self._reported.discard(uid)
                self._mounted.discard(uid)
                run = self._runs.pop(uid, None)
                if run is not None and run.alive:
                    # Deleted outright (grace 0, or the namespace went): nobody waits.
                    self._signal(run, signal.SIGKILL)
                    assert run.process is not None
                    run.process.wait(timeout=10)
            for pod in pods:
                try:
                    node = pod["spec"].get("nodeName")
                    if node and not self._kubelet_up(api, node):
                        continue  # a dead kubelet neither starts, reports nor deletes
                    if runs_as_process(pod):
                        self._sync_process_pod(api, pod)
                    else:
                        self._sync_mount_check(api, pod)
                except Exception as exc:  # one pod's trouble must not stop the rest
                    if isinstance(exc, ApiException) and exc.status in (404, 409):
                        continue  # the pod went or changed meanwhile; the watch brings news
                    log.exception("process kubelet: syncing pod %s", pod["metadata"]["name"])

    def _sync_process_pod(self, api: client.CoreV1Api, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        uid = meta["uid"]
        run = self._runs.get(uid)
        if meta.get("deletionTimestamp"):
            self._terminate(api, pod, run)
            return
        node = spec.get("nodeName")
        if not node:
            return
        self._ensure_log_server(api, node)
        if run is None:
            self._first_sync(api, pod, node)
            return
        if run.finished:
            return
        if run.restart_at is not None:
            if time.monotonic() >= run.restart_at:
                run.restart_at = None
                self._spawn(api, pod, run)
            return
        assert run.process is not None
        code = run.process.poll()
        if code is not None:
            self._exited(api, pod, run, exit_code_of(code))

    def _first_sync(self, api: client.CoreV1Api, pod: dict[str, Any], node: str) -> None:
        """A bound pod this agent has not run yet: start it, unless it ran elsewhere."""
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            return
        started = status.get("containerStatuses") or []
        if any("waiting" not in (s.get("state") or {}) for s in started):
            # Started by an earlier agent, whose process is gone: the runtime lost it.
            self._write_status(api, pod, self._lost_status(pod))
            return
        self._start(api, pod, node)

    # -- starting ---------------------------------------------------------------

    def _start(self, api: client.CoreV1Api, pod: dict[str, Any], node: str) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        containers = spec["containers"]
        if len(containers) != 1 or spec.get("initContainers"):
            self._fail_to_start(
                api, pod, "CreateContainerError",
                "the process kubelet runs pods of one container and no init containers",
            )  # fmt: skip
            return
        container = containers[0]
        if not container.get("command"):
            self._fail_to_start(
                api, pod, "CreateContainerError",
                "the process kubelet pulls no image: the container needs a `command`",
            )  # fmt: skip
            return
        pod_dir = self.pod_dir(node, meta["namespace"], meta["name"], meta["uid"])
        mounts, missing = self._mounts(pod, node, pod_dir)
        if missing:
            self._hold_for_mount(api, pod, node, missing)
            return
        mounts.append((message_path(container), pod_dir / MESSAGE_FILE))
        try:
            declared = self._env(api, pod, container)
        except _ConfigError as exc:
            self._fail_to_start(api, pod, "CreateContainerConfigError", str(exc))
            return
        env = {k: translate_path(v, mounts) for k, v in declared.items()}
        argv = [
            translate_path(expand_vars(a, declared), mounts)
            for a in [*container["command"], *(container.get("args") or [])]
        ]
        cwd = Path(translate_path(container.get("workingDir") or str(pod_dir), mounts))
        pod_dir.mkdir(parents=True, exist_ok=True)
        # A container gets its image's environment, not the test's: only PATH and HOME.
        base = {"PATH": container_path(os.environ.get("PATH")), "HOME": str(pod_dir)}
        run = _Run(node, pod_dir, argv, {**base, **env}, cwd)
        self._runs[meta["uid"]] = run
        self._spawn(api, pod, run)

    def _mounts(
        self, pod: Mapping[str, Any], node: str, pod_dir: Path
    ) -> tuple[list[tuple[str, Path]], list[str]]:
        """(mountPath, local dir) of the container's hostPath, persistentVolumeClaim and
        emptyDir mounts, and the missing hostPath Directories."""
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounts: list[tuple[str, Path]] = []
        missing: list[str] = []
        for mount in pod["spec"]["containers"][0].get("volumeMounts") or []:
            volume = volumes.get(mount["name"]) or {}
            if "hostPath" in volume:
                source = volume["hostPath"]
                local = self.host_path(node, source["path"])
                kind = source.get("type") or ""
                if kind == "Directory" and not local.is_dir():
                    missing.append(source["path"])
                    continue
                if kind in ("", "DirectoryOrCreate"):
                    local.mkdir(parents=True, exist_ok=True)
            elif "persistentVolumeClaim" in volume:
                # The scheduler placed the pod only once its claim was bound.
                claim = volume["persistentVolumeClaim"]["claimName"]
                local = self.claim_dir(pod["metadata"]["namespace"], claim)
                local.mkdir(parents=True, exist_ok=True)
            elif "emptyDir" in volume:
                local = pod_dir / "volumes" / mount["name"]
                local.mkdir(parents=True, exist_ok=True)
            else:
                continue  # secrets, projected tokens...: not provided to the process
            sub = mount.get("subPath")
            if sub:
                local /= sub
                local.mkdir(parents=True, exist_ok=True)  # the kubelet makes a missing subPath
            mounts.append((mount["mountPath"], local))
        return mounts, missing

    def _env(
        self, api: client.CoreV1Api, pod: Mapping[str, Any], container: Mapping[str, Any]
    ) -> dict[str, str]:
        namespace = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        # envFrom first, then env, which wins on a name both give (the kubelet's order).
        for source in container.get("envFrom") or []:
            env.update(self._env_from(api, namespace, source))
        for var in container.get("env") or []:
            if "value" in var or "valueFrom" not in var:
                env[var["name"]] = expand_vars(var.get("value") or "", env)
                continue
            value = self._value_from(api, pod, namespace, var["valueFrom"])
            if value is not None:
                env[var["name"]] = value
        return env

    def _env_from(
        self, api: client.CoreV1Api, namespace: str, source: Mapping[str, Any]
    ) -> dict[str, str]:
        """Every key of a Secret or ConfigMap, with the source's prefix."""
        for kind, secret in (("secretRef", True), ("configMapRef", False)):
            if kind in source:
                data = _read_data(api, namespace, kind, source[kind], secret=secret)
                prefix = source.get("prefix") or ""
                return {prefix + k: v for k, v in (data or {}).items()}
        raise _ConfigError(f"envFrom {sorted(source)} is not supported by the process kubelet")

    def _value_from(
        self,
        api: client.CoreV1Api,
        pod: Mapping[str, Any],
        namespace: str,
        source: Mapping[str, Any],
    ) -> str | None:
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            fields = {
                "metadata.name": pod["metadata"]["name"],
                "metadata.namespace": namespace,
                "metadata.uid": pod["metadata"]["uid"],
                "spec.nodeName": pod["spec"].get("nodeName", ""),
                "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
            }
            if path not in fields:
                raise _ConfigError(f"fieldRef {path} is not supported by the process kubelet")
            return str(fields[path])
        for kind, secret in (("secretKeyRef", True), ("configMapKeyRef", False)):
            if kind not in source:
                continue
            ref = source[kind]
            data = _read_data(api, namespace, kind, ref, secret=secret)
            if data is None:
                return None
            if ref["key"] not in data:
                if ref.get("optional"):
                    return None
                raise _ConfigError(f"couldn't find key {ref['key']} in {kind} {ref['name']}")
            return str(data[ref["key"]])
        raise _ConfigError(f"valueFrom {sorted(source)} is not supported by the process kubelet")

    def _spawn(self, api: client.CoreV1Api, pod: Mapping[str, Any], run: _Run) -> None:
        run.pod_dir.mkdir(parents=True, exist_ok=True)
        # Each container instance starts with an empty message file, as the kubelet's
        # is new per container; the log goes on, and this instance's part starts here.
        (run.pod_dir / MESSAGE_FILE).write_bytes(b"")
        with (run.pod_dir / LOG_FILE).open("ab") as out:
            if run.process is not None:  # a restart: the last instance becomes "previous"
                run.previous_log = (run.log_offset, out.tell())
            run.log_offset = out.tell()
            try:
                # A session of its own, so the whole process group can be signalled;
                # stdout and stderr share the log, interleaved as written.
                run.process = subprocess.Popen(
                    run.argv, env=run.env, cwd=run.cwd, stdin=subprocess.DEVNULL,
                    stdout=out, stderr=out, start_new_session=True,
                )  # fmt: skip
            except OSError as exc:
                run.finished = True
                self._write_status(
                    api, pod, self._terminated_status(pod, run, 128, str(exc), "StartError")
                )
                return
        run.started_at = now()
        container = pod["spec"]["containers"][0]
        status = {
            "phase": "Running",
            "hostIP": self._node_ip(api, run.node),
            "startTime": (pod.get("status") or {}).get("startTime") or run.started_at,
            "conditions": _conditions(ready=True),
            "containerStatuses": [
                self._container_status(
                    container, run, {"running": {"startedAt": run.started_at}}, ready=True
                )
            ],
        }
        self._write_status(api, pod, status)

    # -- finishing --------------------------------------------------------------

    def _exited(self, api: client.CoreV1Api, pod: Mapping[str, Any], run: _Run, code: int) -> None:
        restart = pod["spec"].get("restartPolicy", "Always")
        message = self._termination_message(pod, run, code)
        if restart == "Always" or (restart == "OnFailure" and code != 0):
            # The kubelet restarts the container in the same pod, after a back-off.
            run.last_terminated = self._terminated(run, code, message)
            run.restart_count += 1
            run.restart_at = time.monotonic() + RESTART_BACKOFF_SECONDS
            container = pod["spec"]["containers"][0]
            waiting = {"waiting": {"reason": "CrashLoopBackOff"}}
            self._write_status(
                api,
                pod,
                {
                    "conditions": _conditions(ready=False, reason="ContainersNotReady"),
                    "containerStatuses": [
                        self._container_status(container, run, waiting, ready=False)
                    ],
                },
            )
            return
        run.finished = True
        self._write_status(api, pod, self._terminated_status(pod, run, code, message))

    def _termination_message(self, pod: Mapping[str, Any], run: _Run, code: int) -> str:
        """The kubelet's rule: the message file; with FallbackToLogsOnError, an empty file
        and a failure, the tail of this container instance's log."""
        container = pod["spec"]["containers"][0]
        message = read_message_file(run.pod_dir / MESSAGE_FILE)
        policy = container.get("terminationMessagePolicy") or "File"
        if not message and code != 0 and policy == "FallbackToLogsOnError":
            with (run.pod_dir / LOG_FILE).open("rb") as f:
                f.seek(run.log_offset)
                message = tail_message(f.read())
        return message

    def _terminated(self, run: _Run, code: int, message: str, reason: str = "") -> dict[str, Any]:
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": reason or ("Completed" if code == 0 else "Error"),
            "startedAt": run.started_at or now(),
            "finishedAt": now(),
        }
        if run.process is not None:
            terminated["containerID"] = f"process://{run.process.pid}"
        if message:
            terminated["message"] = message
        return terminated

    def _terminated_status(
        self, pod: Mapping[str, Any], run: _Run, code: int, message: str, reason: str = ""
    ) -> dict[str, Any]:
        container = pod["spec"]["containers"][0]
        state = {"terminated": self._terminated(run, code, message, reason)}
        return {
            "phase": "Succeeded" if code == 0 else "Failed",
            "conditions": _conditions(ready=False, reason="PodCompleted"),
            "containerStatuses": [self._container_status(container, run, state, ready=False)],
        }

    def _lost_status(self, pod: Mapping[str, Any]) -> dict[str, Any]:
        """What a kubelet reports for a container the runtime no longer knows."""
        stamp = now()
        lost = {
            "exitCode": 137,
            "reason": "ContainerStatusUnknown",
            "message": "The container could not be located when the pod was terminated "
            "(its process kubelet stopped)",
            "startedAt": stamp,
            "finishedAt": stamp,
        }
        return {
            "phase": "Failed",
            "conditions": _conditions(ready=False, reason="PodCompleted"),
            "containerStatuses": [
                _container_entry(c, {"terminated": lost}) for c in pod["spec"]["containers"]
            ],
        }

    def _container_status(
        self, container: Mapping[str, Any], run: _Run, state: dict[str, Any], *, ready: bool
    ) -> dict[str, Any]:
        status = _container_entry(container, state, ready=ready, restart_count=run.restart_count)
        if run.process is not None:
            status["containerID"] = f"process://{run.process.pid}"
        if run.last_terminated is not None:
            status["lastState"] = {"terminated": run.last_terminated}
        return status

    def _fail_to_start(
        self, api: client.CoreV1Api, pod: Mapping[str, Any], reason: str, message: str
    ) -> None:
        """A container that cannot be created waits with the reason, as on a real node."""
        uid = pod["metadata"]["uid"]
        if uid in self._reported:
            return
        self._reported.add(uid)
        self._event(api, pod, "Failed", f"Error: {message}")
        self._write_status(api, pod, self._waiting_status(pod, reason, message))

    # -- the kubelet API: container logs ---------------------------------------

    def _ensure_log_server(self, api: client.CoreV1Api, node: str) -> None:
        """Serve the kubelet API's containerLogs at the node's InternalIP and kubelet port
        (status.daemonEndpoints), where the API server sends `kubectl logs`."""
        if node in self._log_servers:
            return
        obj = self._node(api, node) or {}
        port = (
            ((obj.get("status") or {}).get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}
        ).get("Port") or 0
        address = self._node_ip(api, node)
        server: _KubeletServer | None = None
        if port and address:
            try:
                server = _KubeletServer(self, node, (address, int(port)), self._tls())
            except (OSError, subprocess.CalledProcessError) as exc:
                log.warning("process kubelet: no logs for node %s: %s", node, exc)
        self._log_servers[node] = server
        if server is not None:
            thread = threading.Thread(target=server.serve_forever, name=f"kubelet-api-{node}")
            thread.daemon = True
            thread.start()

    def _tls(self) -> ssl.SSLContext:
        """A serving certificate of the agent's own: the API server does not check a
        kubelet's certificate unless given --kubelet-certificate-authority."""
        folder = self.root / ".kubelet-tls"
        cert, key = folder / "kubelet.crt", folder / "kubelet.key"
        if not cert.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7",
                 "-subj", "/CN=process-kubelet", "-keyout", str(key), "-out", str(cert)],
                check=True, capture_output=True,
            )  # fmt: skip
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        return context

    def container_log(
        self, node: str, namespace: str, name: str, container: str, *, previous: bool = False
    ) -> tuple[Path, int, int | None, _Run]:
        """(log file, start, end or None while it grows, run) of a container on ``node``.

        Raises LookupError (404) or ValueError (400) with the kubelet's kind of message.
        """
        with self._lock:
            pod = next(
                (
                    p
                    for p in self._pods.values()
                    if p["metadata"]["namespace"] == namespace
                    and p["metadata"]["name"] == name
                    and p["spec"].get("nodeName") == node
                    and runs_as_process(p)
                ),
                None,
            )
        if pod is None:
            raise LookupError(f'pod "{namespace}/{name}" does not exist on node "{node}"')
        names = [c["name"] for c in pod["spec"]["containers"]]
        if container not in names:
            raise LookupError(f'container "{container}" is not valid for pod "{name}"')
        run = self._runs.get(pod["metadata"]["uid"])
        if run is None or (run.process is None and not run.finished):
            raise ValueError(f'container "{container}" in pod "{name}" is waiting to start')
        path = run.pod_dir / LOG_FILE
        if previous:
            if run.previous_log is None:
                raise ValueError(
                    f'previous terminated container "{container}" in pod "{name}" not found'
                )
            return path, run.previous_log[0], run.previous_log[1], run
        return path, run.log_offset, None, run

    # -- volumes ----------------------------------------------------------------

    def _hold_for_mount(
        self, api: client.CoreV1Api, pod: Mapping[str, Any], node: str, missing: list[str]
    ) -> None:
        uid = pod["metadata"]["uid"]
        if uid in self._reported:
            return  # reported once; checked again on every tick
        self._reported.add(uid)
        names = {path: name for name, path in directory_volumes(pod)}
        for path in missing:
            self._event(
                api, pod, "FailedMount",
                f'MountVolume.SetUp failed for volume "{names.get(path, path)}" : '
                f"hostPath type check failed: {path} is not a directory",
            )  # fmt: skip
        status = self._waiting_status(pod, "ContainerCreating", None)
        status["hostIP"] = self._node_ip(api, node)
        self._write_status(api, pod, status)

    def _sync_mount_check(self, api: client.CoreV1Api, pod: dict[str, Any]) -> None:
        """The volume manager of a kwok-run pod with hostPath Directory or claim volumes,
        and the model load of a serving pod that reads a cache's copy."""
        meta, spec = pod["metadata"], pod["spec"]
        node = spec.get("nodeName")
        if node and held_for_load(pod):
            self._sync_held_load(api, pod, node)
            return
        if not node or not needs_mount_check(pod) or meta["uid"] in self._mounted:
            return
        missing = [
            path for _, path in directory_volumes(pod) if not self.host_path(node, path).is_dir()
        ]
        if missing:
            self._hold_for_mount(api, pod, node, missing)
            return
        # All there: let kwok start it (its stages wait for this annotation), or hold it
        # crash-looping when its server could not load the weights.
        notes: dict[str, str | None] = {MOUNTED_ANNOTATION: now()}
        problem = self._load_problem(pod, node)
        if problem is not None:
            notes |= {HOLD_ANNOTATION: "CrashLoopBackOff", HELD_BY_ANNOTATION: HELD_BY_AGENT}
            self._event(
                api, pod, "ModelLoadFailed", f"the server cannot load its weights: {problem}"
            )
        api.patch_namespaced_pod(
            meta["name"], meta["namespace"], {"metadata": {"annotations": notes}},
            _content_type="application/merge-patch+json",
        )  # fmt: skip
        self._mounted.add(meta["uid"])

    def _sync_held_load(self, api: client.CoreV1Api, pod: dict[str, Any], node: str) -> None:
        """A pod held crash-looping for its weights starts once they load, as the next
        restart of a real container would."""
        if pod["metadata"].get("deletionTimestamp") or self._load_problem(pod, node) is not None:
            return
        notes = {HOLD_ANNOTATION: None, HELD_BY_ANNOTATION: None}
        api.patch_namespaced_pod(
            pod["metadata"]["name"], pod["metadata"]["namespace"],
            {"metadata": {"annotations": notes}},
            _content_type="application/merge-patch+json",
        )  # fmt: skip

    def _load_problem(self, pod: Mapping[str, Any], node: str) -> str | None:
        """Why a kwok-run serving pod's SGLang could not load its local copy, if it could not."""
        if CACHE_KEY_LABEL not in (pod["metadata"].get("labels") or {}):
            return None
        model_path = model_path_arg(pod)
        if model_path is None or not f"{model_path}/".startswith(MODEL_MOUNT + "/"):
            return None
        rel = model_path.removeprefix(MODEL_MOUNT).lstrip("/")
        for volume in pod["spec"].get("volumes") or []:
            if volume.get("name") != MODEL_VOLUME:
                continue
            if volume.get("persistentVolumeClaim"):
                claim = volume["persistentVolumeClaim"]["claimName"]
                return weights_problem(self.claim_dir(pod["metadata"]["namespace"], claim) / rel)
            if volume.get("hostPath"):
                return weights_problem(self.host_path(node, volume["hostPath"]["path"]) / rel)
        return None

    def _waiting_status(
        self, pod: Mapping[str, Any], reason: str, message: str | None
    ) -> dict[str, Any]:
        waiting: dict[str, Any] = {"reason": reason}
        if message:
            waiting["message"] = message
        stamp = now()
        conditions = _conditions(ready=False, reason="ContainersNotReady")
        conditions[0]["status"] = "False"  # PodReadyToStartContainers: no sandbox yet
        return {
            "phase": "Pending",
            "startTime": stamp,
            "conditions": conditions,
            "containerStatuses": [
                _container_entry(c, {"waiting": waiting}) for c in pod["spec"]["containers"]
            ],
        }

    # -- deleting ---------------------------------------------------------------

    def _terminate(self, api: client.CoreV1Api, pod: Mapping[str, Any], run: _Run | None) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        if run is not None and run.alive:
            grace = meta.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
            if run.term_sent_at is None:
                run.term_sent_at = time.monotonic()
                self._signal(run, signal.SIGTERM)
            elif time.monotonic() - run.term_sent_at >= float(grace):
                self._signal(run, signal.SIGKILL)
            return
        if uid in self._confirmed:
            return
        if run is not None and not run.finished and run.process is not None:
            run.finished = True
            code = exit_code_of(run.process.returncode)
            message = self._termination_message(pod, run, code)
            self._write_status(api, pod, self._terminated_status(pod, run, code, message))
        self._confirmed.add(uid)
        # The containers are stopped: confirm the deletion, as the kubelet does.
        api.delete_namespaced_pod(
            meta["name"], meta["namespace"],
            body={"gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
        )  # fmt: skip

    @staticmethod
    def _signal(run: _Run, sig: signal.Signals) -> None:
        if run.process is None or run.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.process.pid, sig)

    # -- API writes -------------------------------------------------------------

    def _write_status(
        self, api: client.CoreV1Api, pod: Mapping[str, Any], status: dict[str, Any]
    ) -> None:
        meta = pod["metadata"]
        api.patch_namespaced_pod_status(
            meta["name"], meta["namespace"], {"status": status},
            _content_type="application/merge-patch+json",
        )  # fmt: skip

    def _event(
        self, api: client.CoreV1Api, pod: Mapping[str, Any], reason: str, message: str
    ) -> None:
        meta = pod["metadata"]
        stamp = now()
        api.create_namespaced_event(
            meta["namespace"],
            {
                "metadata": {"generateName": f"{meta['name']}."},
                "involvedObject": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta["uid"],
                },
                "reason": reason,
                "message": message,
                "type": "Warning",
                "source": {"component": "kubelet", "host": pod["spec"].get("nodeName", "")},
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
            },
        )

    def _node(self, api: client.CoreV1Api, node: str) -> dict[str, Any] | None:
        """The Node (None if there is none), read at most every NODE_RECHECK_SECONDS."""
        read_at, obj = self._nodes.get(node, (float("-inf"), None))
        if time.monotonic() - read_at >= NODE_RECHECK_SECONDS:
            try:
                obj = json.loads(api.read_node(node, _preload_content=False).data)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                obj = None
            self._nodes[node] = (time.monotonic(), obj)
        return obj

    def _kubelet_up(self, api: client.CoreV1Api, node: str) -> bool:
        """Whether kwok still plays the node's kubelet (nodes.kill_kubelet, make_not_ready)."""
        labels = ((self._node(api, node) or {}).get("metadata") or {}).get("labels") or {}
        return labels.get(KWOK_LABEL) == KWOK_VALUE and labels.get(KUBELET_LABEL) != KUBELET_DOWN

    def _node_ip(self, api: client.CoreV1Api, node: str) -> str:
        for address in ((self._node(api, node) or {}).get("status") or {}).get("addresses") or []:
            if address["type"] == "InternalIP":
                return str(address["address"])
        return ""


class _KubeletServer(http.server.ThreadingHTTPServer):
    """The kubelet API of one node, as far as the process kubelet answers it: containerLogs
    (tailLines, limitBytes, follow, previous) of the pods it runs there."""

    daemon_threads = True

    def __init__(
        self,
        agent: ProcessKubelet,
        node: str,
        address: tuple[str, int],
        tls: ssl.SSLContext,
    ) -> None:
        super().__init__(address, _KubeletHandler)
        self.agent = agent
        self.node = node
        self.socket = tls.wrap_socket(self.socket, server_side=True)


class _KubeletHandler(http.server.BaseHTTPRequestHandler):
    server: _KubeletServer

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._error(404, f"{url.path}: the process kubelet serves only containerLogs")
            return
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        unsupported = sorted(k for k in ("timestamps", "sinceSeconds", "sinceTime") if k in query)
        if query.get("timestamps") == "false":
            unsupported.remove("timestamps")
        if unsupported:
            self._error(400, f"{', '.join(unsupported)}: not supported by the process kubelet")
            return
        try:
            tail = int(query["tailLines"]) if "tailLines" in query else None
            limit = int(query["limitBytes"]) if "limitBytes" in query else None
            path, start, end, run = self.server.agent.container_log(
                self.server.node, parts[1], parts[2], parts[3],
                previous=query.get("previous") == "true",
            )  # fmt: skip
        except LookupError as exc:
            self._error(404, str(exc.args[0]))
            return
        except ValueError as exc:
            self._error(400, str(exc))
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        follow = query.get("follow") == "true" and end is None
        self._stream(path, start, end, run, tail=tail, limit=limit, follow=follow)

    def _stream(
        self,
        path: Path,
        start: int,
        end: int | None,
        run: _Run,
        *,
        tail: int | None,
        limit: int | None,
        follow: bool,
    ) -> None:
        process = run.process
        with path.open("rb") as f:
            f.seek(start)
            data = f.read() if end is None else f.read(end - start)
            if tail is not None:
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[-tail:]) if tail > 0 else b""
            sent = 0
            while True:
                if limit is not None:
                    data = data[: max(0, limit - sent)]
                if data:
                    self.wfile.write(data)
                    self.wfile.flush()
                    sent += len(data)
                # Following: until the container instance ends (its output read to the end).
                if not follow or (limit is not None and sent >= limit):
                    return
                done = process is None or process.poll() is not None or run.process is not process
                data = f.read()
                if done and not data:
                    return
                if not data:
                    time.sleep(0.1)

    def _error(self, code: int, message: str) -> None:
        body = message.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("process kubelet API: " + format, *args)


class _ConfigError(Exception):
    """The container's env cannot be resolved (CreateContainerConfigError)."""


class _Shared:
    """The test session's one agent and how many fixtures hold it."""

    lock = threading.Lock()
    agent: ProcessKubelet | None = None
    users = 0


@contextlib.contextmanager
def shared_kubelet(cluster: Cluster, root: Callable[[], Path]) -> Iterator[ProcessKubelet]:
    """The session's one agent, for the session fixtures of tests/integration and tests/e2e.

    The first user starts it, with its node root from ``root()``; the last one stops it
    (after the pods being deleted are gone). Two conftests asking in one session get the
    same agent.
    """
    with _Shared.lock:
        if _Shared.agent is None:
            _Shared.agent = ProcessKubelet(cluster, root()).start()
        _Shared.users += 1
        agent = _Shared.agent
    try:
        yield agent
    finally:
        with _Shared.lock:
            _Shared.users -= 1
            if _Shared.users == 0:
                _Shared.agent = None
                agent.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the agent outside pytest (for `make demo`): until SIGINT or SIGTERM."""
    import argparse  # noqa: PLC0415 - only this entry point needs it

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--root", type=Path, required=True, help="the nodes' disks: ROOT/<node>")
    parser.add_argument("--kubeconfig", type=Path, required=True, help="an admin kubeconfig")
    parser.add_argument(
        "--claims-root",
        type=Path,
        help="PersistentVolumeClaims' storage: CLAIMS_ROOT/<namespace>/<claim> "
        "(default: ROOT/../claims)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    cluster = Cluster(kubeconfig=args.kubeconfig, bin_dir=Path(), topology="")
    agent = ProcessKubelet(cluster, args.root, args.claims_root).start()
    log.info("process kubelet running; nodes' disks under %s", args.root)
    stop.wait()
    agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

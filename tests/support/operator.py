"""The operator as tests run it: a real process, authenticated as the chart's ServiceAccount."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mistral_operator.core.admission import WEBHOOK_NAME
from tests.support.cluster import REPO_ROOT, Cluster
from tests.support.stub_hub import StubHub
from tests.support.wait import WaitTimeoutError, wait_for
from tests.support.weights import hub_secret

# What the operator logs when something went wrong that no test should shrug off.
ERROR_LINE = re.compile(r"Traceback|\[ERROR|failed with an exception|reconcile failed|Unhandled")
CHART = REPO_ROOT / "charts" / "mistral-operator"
RELEASE = "mistral-operator"
SYSTEM_NAMESPACE = "mistral-system"
# The chart's webhook configuration (named after the release), registered out of cluster.
WEBHOOK_CONFIGURATION = RELEASE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# One webhook port for the session: every operator process listens on it (SO_REUSEPORT,
# as Kopf's server binds), so replicas share one registration as pods share a Service.
WEBHOOK_PORT = free_port()


@dataclass
class RunningOperator:
    process: subprocess.Popen[bytes]
    metrics_port: int
    health_port: int
    log_path: Path
    user: str

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def errors_since(self, offset: int, expected: tuple[str, ...] = ()) -> list[str]:
        """Error lines (tracebacks, failed handlers and reconciles) logged after ``offset``,
        except those matching one of the ``expected`` regexes."""
        with self.log_path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        found = [line for line in text.splitlines() if ERROR_LINE.search(line)]
        return [line for line in found if not any(re.search(p, line) for p in expected)]

    def assert_clean(self, offset: int = 0, expected: tuple[str, ...] = ()) -> None:
        """Fail if the operator logged an error (other than ``expected``) after ``offset``."""
        errors = self.errors_since(offset, expected)
        assert not errors, "the operator logged errors:\n" + "\n".join(errors[:20])


def install_chart(cluster: Cluster, *values: str) -> None:
    """The chart's ServiceAccount and RBAC, as `helm install` creates them.

    The webhook is in mode `local` (the operator runs here and registers itself), unless
    ``values`` say otherwise. --take-ownership and --force-conflicts let the release adopt
    a CRD another test applied with kubectl (server-side, under kubectl's field manager).
    """
    cluster.helm(
        "upgrade", "--install", RELEASE, str(CHART),
        "--namespace", SYSTEM_NAMESPACE, "--create-namespace",
        "--take-ownership", "--force-conflicts", "--set", "webhook.mode=local", *values,
    )  # fmt: skip


@contextmanager
def run_operator(
    cluster: Cluster,
    workdir: Path,
    *,
    namespaces: tuple[str, ...],
    node_grace_seconds: float = 5,
    peering: str | None = None,
    drift_interval_seconds: float = 300,
    extra_args: Sequence[str] = (),
    container: Callable[[Path], list[str]] | None = None,
    webhook: bool = True,
    webhook_check_seconds: float = 10,
) -> Iterator[RunningOperator]:
    """Run `mistral-operator run` with a token of the chart's ServiceAccount, then stop it.

    Simulated nodes run no containers, so the operator runs here, out of cluster, with
    exactly the permissions the chart grants; ``peering`` names a ClusterKopfPeering.
    The drift interval is long, so that tests show reactions come from events and the
    operator's own deadlines, not from a periodic resync. ``extra_args`` go last on the
    command line (options of `run` a test module sets, such as the cache GC's).
    ``container``, given the kubeconfig's path, returns the command that runs the
    program in place of this environment's `mistral-operator` (the image, in a runtime).
    With ``webhook`` it serves the validating webhook on WEBHOOK_PORT and registers it
    (mode local), checking its certificate and registration every
    ``webhook_check_seconds`` (the chart's default is 300); a registration a killed
    process left behind is removed afterwards.
    """
    token = cluster.kubectl(
        "create", "token", RELEASE, "-n", SYSTEM_NAMESPACE, "--duration=2h"
    ).stdout.strip()
    kubeconfig = cluster.token_kubeconfig(token, workdir / "operator.kubeconfig")
    metrics_port, health_port = free_port(), free_port()
    log_path = workdir / "operator.log"
    program = (
        container(kubeconfig)
        if container
        else [str(Path(sys.executable).with_name("mistral-operator"))]
    )
    args = [
        *program, "run",
        "--metrics-port", str(metrics_port), "--health-port", str(health_port),
        "--node-grace-seconds", str(node_grace_seconds), "--log-format", "plain",
        "--drift-interval-seconds", str(drift_interval_seconds),
        # Fills report progress each second, so tests see it within their few seconds.
        "--cache-fill-progress-seconds", "1",
        # A pod kept waiting on a Ready cache gets it checked after 10 s, not 2 min.
        "--cache-verify-after-seconds", "10",
    ]  # fmt: skip
    if webhook:
        args += [
            "--webhook", "local", "--webhook-port", str(WEBHOOK_PORT),
            "--webhook-namespace", SYSTEM_NAMESPACE,
            "--webhook-check-seconds", str(webhook_check_seconds),
        ]  # fmt: skip
    args += ["--peering-name", peering] if peering else ["--standalone"]
    for ns in namespaces:
        args += ["--namespace", ns]
    args += extra_args
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    running = RunningOperator(
        process, metrics_port, health_port, log_path,
        user=f"system:serviceaccount:{SYSTEM_NAMESPACE}:{RELEASE}",
    )  # fmt: skip
    try:
        wait_for(
            lambda: process.poll() is None and _healthy(health_port),
            timeout=60,
            what="the operator's liveness endpoint",
        )
        _wait_for_admission(cluster, webhook=webhook)
        globs = [ns for ns in namespaces if ns.endswith("*")]
        if globs:
            _wait_until_new_namespaces_are_watched(cluster, globs[0].rstrip("*"))
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if webhook:  # a process that was killed could not take its registration away
            cluster.kubectl(
                "delete", "validatingwebhookconfiguration", WEBHOOK_CONFIGURATION,
                "--ignore-not-found", check=False,
            )  # fmt: skip


def _wait_for_admission(cluster: Cluster, *, webhook: bool) -> None:
    """Return once the API server admits models as this operator asks.

    The API server reads webhook configurations through a cache, so right after one was
    registered or removed (by this process, or by the operator run before it) it may
    still call a local port no process listens on, or not call ours yet. A server-side
    dry run of a spec only the webhook refuses (no node of its GPU fits the model)
    tells: refused by our webhook when it is on; when it is off, not sent to a local
    registration (a chart in mode service keeps its own configuration, which the API
    server cannot reach here: that answer is the test's to read).
    """
    unfit = {
        "apiVersion": "serving.mistral-operator.dev/v1alpha1",
        "kind": "MistralModel",
        "metadata": {"name": "admission-probe", "namespace": SYSTEM_NAMESPACE},
        "spec": {
            "model": {"profile": "mistral-large-2-123b"},
            "gpu": {"product": "H100", "gpusPerNode": 2},
            "parallelism": {"shape": "Compact"},
        },
    }

    def settled() -> bool:
        answer = cluster.kubectl(
            "create", "--dry-run=server", "-f", "-", input=json.dumps(unfit), check=False
        )
        if "no matches for kind" in answer.stderr:
            return True  # no CRD yet: nothing to admit
        if webhook:
            return f'admission webhook "{WEBHOOK_NAME}" denied' in answer.stderr
        local = f'failed calling webhook "{WEBHOOK_NAME}"' in answer.stderr and (
            "https://127.0.0.1" in answer.stderr
        )
        return not local

    wait_for(settled, timeout=30, what="the API server to admit models as this operator asks")


def _wait_until_new_namespaces_are_watched(cluster: Cluster, prefix: str) -> None:
    """Return once a namespace created now is watched by the operator.

    Kopf (1.x) lists namespaces once as it starts, then again as its namespace watch
    begins, and skips what the second listing holds: a namespace created between the two
    is never watched (until a restart). A test that makes its namespace right after the
    operator starts can fall in that moment, so a probe goes first: a namespace with a
    model of 0 replicas, until one gets its status (the watch is then past its listing).
    """
    for attempt in range(6):
        namespace = f"{prefix}probe-{attempt}-{uuid.uuid4().hex[:6]}"
        cluster.kubectl("create", "namespace", namespace)
        probe = {
            "apiVersion": "serving.mistral-operator.dev/v1alpha1",
            "kind": "MistralModel",
            "metadata": {"name": "probe", "namespace": namespace},
            "spec": {"gpu": {"product": "H200"}, "replicas": 0},
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(probe))

        def reconciled(ns: str = namespace) -> bool:
            status = cluster.get_json("mm", "probe", "-n", ns).get("status") or {}
            return bool(status.get("observedGeneration"))

        try:
            wait_for(reconciled, timeout=10, what="the probe model reconciled")
            return
        except WaitTimeoutError:
            continue
        finally:
            cluster.kubectl("delete", "mm", "probe", "-n", namespace, "--timeout=30s", check=False)
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    raise WaitTimeoutError(f"the operator never watched a new {prefix}* namespace")


def _healthy(port: int) -> bool:
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def own_namespace(cluster: Cluster, prefix: str, hub: StubHub) -> Iterator[str]:
    """A namespace only a test's own operators watch (``prefix*``; the shared operator
    watches ``rt-*``), with the chart's identity installed and the Secret that points its
    fills at ``hub``; deleted afterwards without waiting."""
    install_chart(cluster, "--set", "installCRDs=false")
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    hub_secret(cluster, name, hub)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)

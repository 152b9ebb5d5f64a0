"""What the validating webhook adds to `kubectl apply` (issue 14).

The same spec edit (runtime.contextLength toggled on a model of 0 replicas, so the
webhook is called and nothing else happens) is applied with the operator's webhook
registered (mode local, as `make demo` runs it) and without it (the operator running with
no webhook, so that it reacts to each edit the same way), in alternating blocks so both
meet the same machine:
- `kubectl apply`, the whole command as a user or pipeline runs it;
- one PATCH through the Python client, the API server's own latency.
Each figure is the median; its baseline is the same without the webhook.

Run: `python -m tests.bench.bench_admission [--edits N] [--blocks N]`.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config

from mistral_operator.api import names
from mistral_operator.core.admission import WEBHOOK_NAME
from tests.bench.bench_cluster import Row, bench_parser, emit
from tests.support.cluster import REPO_ROOT, Cluster
from tests.support.operator import WEBHOOK_CONFIGURATION, install_chart, run_operator
from tests.support.wait import wait_for

CRD_PATH = REPO_ROOT / "crds" / names.CRD_FILENAME
NAMESPACE = "bench-admission"
MODEL = "edited"
SPEC: dict[str, Any] = {"gpu": {"product": "H200"}, "replicas": 0}
# A spec only the webhook refuses (a Compact replica that fits no node of two H100s).
UNFIT = json.dumps({
    "apiVersion": names.API_VERSION, "kind": names.KIND,
    "metadata": {"name": "unfit", "namespace": NAMESPACE},
    "spec": {"model": {"profile": "mistral-large-2-123b"}, "parallelism": {"shape": "Compact"},
             "gpu": {"product": "H100", "gpusPerNode": 2}},
})  # fmt: skip


def manifest(context_length: int) -> str:
    spec = {**SPEC, "runtime": {"contextLength": context_length}}
    body = {"apiVersion": names.API_VERSION, "kind": names.KIND,
            "metadata": {"name": MODEL, "namespace": NAMESPACE}, "spec": spec}  # fmt: skip
    return json.dumps(body)


def timed(edit: Callable[[int], None], edits: int) -> list[float]:
    samples = []
    for i in range(edits):
        start = time.perf_counter()
        edit(8192 if i % 2 else 16384)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def measure(cluster: Cluster, edits: int) -> tuple[list[float], list[float]]:
    api = client.CustomObjectsApi(config.new_client_from_config(str(cluster.kubeconfig)))

    def by_kubectl(length: int) -> None:
        cluster.kubectl("apply", "-f", "-", input=manifest(length))

    def by_patch(length: int) -> None:
        patch = {"spec": {"runtime": {"contextLength": length}}}
        api.patch_namespaced_custom_object(
            names.GROUP, names.VERSION, NAMESPACE, names.PLURAL, MODEL, patch
        )

    return timed(by_kubectl, edits), timed(by_patch, edits)


def registered(cluster: Cluster) -> bool:
    found = cluster.kubectl(
        "get", "validatingwebhookconfiguration", WEBHOOK_CONFIGURATION, check=False
    )
    return found.returncode == 0


def run(edits: int, blocks: int, workdir: Path) -> list[Row]:
    cluster = Cluster.up("h200")
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{names.CRD_NAME}")
    install_chart(cluster, "--set", "installCRDs=false")
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    cluster.kubectl("apply", "-f", "-", input=manifest(8192))
    samples: dict[bool, tuple[list[float], list[float]]] = {True: ([], []), False: ([], [])}
    try:
        for block in range(blocks):
            for webhook in (True, False):
                workdir_of = workdir / f"op-{block}-{'on' if webhook else 'off'}"
                workdir_of.mkdir(parents=True, exist_ok=True)
                with run_operator(
                    cluster, workdir_of, namespaces=(NAMESPACE,), webhook=webhook
                ) as op:
                    state = "registered" if webhook else "unregistered"

                    def as_asked(wanted: bool = webhook) -> bool:
                        return registered(cluster) == wanted

                    wait_for(as_asked, timeout=30, what=f"the webhook {state}")
                    refused = cluster.kubectl("apply", "-f", "-", input=UNFIT, check=False)
                    assert (WEBHOOK_NAME in refused.stderr) == webhook, refused.stderr
                    kubectl, patch = measure(cluster, edits)
                    samples[webhook][0].extend(kubectl)
                    samples[webhook][1].extend(patch)
                    op.assert_clean()
                cluster.kubectl("delete", "mm", "unfit", "-n", NAMESPACE, "--ignore-not-found",
                                "--timeout=30s", check=False)  # fmt: skip
    finally:  # no operator is left to release the finalizer
        cluster.kubectl("patch", "mm", MODEL, "-n", NAMESPACE, "--type=merge",
                        "-p", '{"metadata":{"finalizers":null}}', check=False)  # fmt: skip
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    note = f"{edits * blocks} spec edits each way, in {blocks} alternating blocks ({WEBHOOK_NAME})"
    return [
        Row("admission", "kubectl apply of a spec edit, webhook on (median)",
            statistics.median(samples[True][0]), "ms",
            baseline=statistics.median(samples[False][0]), note=note),
        Row("admission", "PATCH of a spec edit, webhook on (median)",
            statistics.median(samples[True][1]), "ms",
            baseline=statistics.median(samples[False][1])),
        Row("admission", "PATCH of a spec edit, webhook on (p90)",
            statistics.quantiles(samples[True][1], n=10)[-1], "ms",
            baseline=statistics.quantiles(samples[False][1], n=10)[-1]),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("python -m tests.bench.bench_admission")
    parser.add_argument("--edits", type=int, default=40, help="edits per block and way")
    parser.add_argument("--blocks", type=int, default=3)
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mistral-bench-"))
    emit(run(args.edits, args.blocks, workdir), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

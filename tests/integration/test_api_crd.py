"""The MistralModel CRD on the real API server: examples apply, bad input is refused by field."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tests.support.cluster import REPO_ROOT, Cluster
from tests.support.models import table
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
TESTDATA = Path(__file__).parent / "testdata"
INVALID = sorted((TESTDATA / "invalid").glob("*.yaml"))
IMMUTABLE = sorted(p for p in (TESTDATA / "immutable").iterdir() if p.is_dir())
EXPECT = "# expect: "

QUICKSTART = REPO_ROOT / "examples" / "quickstart-h200.yaml"
COLUMNS = [
    "NAME",
    "READY",
    "DESIRED",
    "QUEUE",
    "NODES/REPLICA",
    "GPU",
    "GPUS/REPLICA",
    "STATUS",
    "AGE",
]


def expected_error(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith(EXPECT), f"{path} must start with '{EXPECT}<substring>'"
    return first.removeprefix(EXPECT).strip()


def apply(
    cluster: Cluster, namespace: str, path: Path, *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`kubectl apply` as a cluster admin would, with the API server's strict field validation."""
    return cluster.kubectl(
        "apply", "--validate=strict", "-n", namespace, "-f", str(path), check=check
    )


@pytest.mark.usefixtures("mistral_crd")
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_applies(cluster: Cluster, namespace: str, path: Path) -> None:
    apply(cluster, namespace, path)
    assert cluster.get_json("mm", "-n", namespace)["items"], "the example created nothing"


@pytest.mark.usefixtures("mistral_crd")
@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_manifest_is_refused_naming_the_field(
    cluster: Cluster, namespace: str, path: Path
) -> None:
    result = apply(cluster, namespace, path, check=False)
    assert result.returncode != 0, f"{path.name} was accepted:\n{result.stdout}"
    assert expected_error(path) in result.stderr, result.stderr


@pytest.mark.usefixtures("mistral_crd")
@pytest.mark.parametrize("case", IMMUTABLE, ids=[p.name for p in IMMUTABLE])
def test_immutable_field_edit_is_refused(cluster: Cluster, namespace: str, case: Path) -> None:
    apply(cluster, namespace, case / "before.yaml")
    result = apply(cluster, namespace, case / "after.yaml", check=False)
    assert result.returncode != 0, f"{case.name}: the edit was accepted"
    assert expected_error(case / "after.yaml") in result.stderr, result.stderr


def test_corpus_size() -> None:
    assert len(INVALID) >= 25
    assert IMMUTABLE


@pytest.mark.usefixtures("mistral_crd")
def test_explain_documents_parallelism(cluster: Cluster) -> None:
    # The OpenAPI document is republished shortly after the CRD is established.
    def explain() -> str | None:
        result = cluster.kubectl("explain", "mistralmodel.spec.parallelism", check=False)
        return result.stdout if result.returncode == 0 else None

    out = wait_for(explain, timeout=60, what="kubectl explain mistralmodel.spec.parallelism")
    print(out)
    for field in (
        "nodesPerReplica",
        "tensorParallelSize",
        "expertParallelSize",
        "attentionDataParallelSize",
        "moeA2ABackend",
    ):
        assert field in out
    assert "--attn-dp-size" in out
    assert "deepep" in out


@pytest.mark.usefixtures("mistral_crd")
def test_get_shows_printer_columns(cluster: Cluster, namespace: str) -> None:
    # Status columns fill in once an operator writes status; where each column reads from
    # is checked against the status schema in the unit tests.
    apply(cluster, namespace, QUICKSTART)
    out = cluster.kubectl("get", "mm", "-n", namespace).stdout
    print(out)
    assert out.splitlines()[0].split() == COLUMNS
    (row,) = table(out)
    assert row["NAME"] == "mistral-small-4"
    assert row["GPU"] == "H200"
    wide = cluster.kubectl("get", "mistral", "-n", namespace, "-o", "wide").stdout
    assert wide.splitlines()[0].split()[-3:] == ["PROFILE", "REVISION", "ENDPOINT"]
    assert "mistral-small-4-119b" in wide


@pytest.mark.usefixtures("mistral_crd")
def test_api_server_applies_defaults(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace, QUICKSTART)
    spec = cluster.get_json("mm/mistral-small-4", "-n", namespace)["spec"]
    assert spec["replicas"] == 1
    assert spec["gpu"]["gpusPerNode"] == 8
    assert spec["cache"]["mode"] == "NodeLocal"
    assert spec["model"]["quantization"] == "auto"
    assert spec["rollout"] == {
        "maxSurge": 1,
        "maxUnavailable": 0,
        "progressDeadlineSeconds": 3600,
        "autoRollback": True,
        "drainTimeoutSeconds": 300,
        "surgeFallbackSeconds": 120,
    }
    assert spec["cache"] == {
        "mode": "NodeLocal",
        "hostPath": "/var/lib/mistral-operator/models",
        "prewarmSpareNodes": 0,
        "fillTimeoutSeconds": 21600,
    }


@pytest.mark.usefixtures("mistral_crd")
def test_scale_subresource(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace, QUICKSTART)
    cluster.kubectl("scale", "-n", namespace, "mm/mistral-small-4", "--replicas=3")
    assert cluster.get_json("mm/mistral-small-4", "-n", namespace)["spec"]["replicas"] == 3
    scale = cluster.get_json("mm/mistral-small-4", "-n", namespace, "--subresource=scale")
    assert scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 3


@pytest.mark.usefixtures("mistral_crd")
def test_status_keeps_unknown_fields_out(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace, QUICKSTART)
    result = cluster.kubectl(
        "patch", "-n", namespace, "mm/mistral-small-4", "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": {"replicas": 0, "bogus": 1}}),
    )  # fmt: skip
    assert 'unknown field "status.bogus"' in result.stderr
    status = cluster.get_json("mm/mistral-small-4", "-n", namespace)["status"]
    assert "bogus" not in status

"""The Helm chart as a GitOps pipeline and a cluster admin use it, with real helm."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml
from tests.support.chart import by_kind, template
from tests.support.cluster import REPO_ROOT, Cluster
from tests.support.operator import CHART, RELEASE, SYSTEM_NAMESPACE, install_chart, run_operator
from tests.support.stub_hub import StubHub
from tests.support.weights import SECRET, hub_secret

from mistral_operator.api import names

MODEL = "mistral-small-4"


def test_helm_lint_is_clean(cluster: Cluster) -> None:
    result = cluster.helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout


def test_template_renders_a_hardened_ha_operator(cluster: Cluster) -> None:
    docs = template(cluster)
    (deployment,) = by_kind(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]["cpu"]
    assert "--peering-name=mistral-operator" in container["args"]
    assert "--standalone" not in container["args"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert by_kind(docs, "PodDisruptionBudget")[0]["spec"]["minAvailable"] == 1
    crds = {d["metadata"]["name"]: d for d in by_kind(docs, "CustomResourceDefinition")}
    assert set(crds) == {names.CRD_NAME, "clusterkopfpeerings.kopf.dev"}
    assert crds[names.CRD_NAME]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    committed = yaml.safe_load((REPO_ROOT / "crds" / names.CRD_FILENAME).read_text())
    assert crds[names.CRD_NAME]["spec"] == committed["spec"]
    assert by_kind(docs, "Service")[0]["spec"]["ports"][0]["name"] == "metrics"
    assert not by_kind(docs, "ServiceMonitor")


def test_rbac_is_least_privilege(cluster: Cluster) -> None:
    rules = [
        (tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r["verbs"]))
        for role in by_kind(template(cluster), "ClusterRole")
        for r in role["rules"]
    ]
    flat = {
        (g, res, v)
        for groups, resources, verbs in rules
        for g in groups
        for res in resources
        for v in verbs
    }
    assert not any("*" in (g, res, v) for g, res, v in flat)
    assert not any(res in {"secrets", "configmaps"} for _, res, _ in flat)
    assert ("", "pods", "delete") in flat
    assert ("", "nodes", "watch") in flat
    # Nodes are labelled with the state of their weight caches (a merge patch), never
    # created, replaced or deleted.
    assert ("", "nodes", "patch") in flat
    assert not any(
        res == "nodes" and v not in {"get", "list", "watch", "patch"} for _, res, v in flat
    )
    assert ("batch", "jobs", "create") in flat
    # Each pod revision's spec is kept in a ControllerRevision (rollbacks read it back).
    assert {("apps", "controllerrevisions", v) for v in ("create", "patch", "delete")} <= flat
    # SharedPVC claims are labelled with their caches' state, never created or deleted.
    assert ("", "persistentvolumeclaims", "patch") in flat
    assert not any(
        res == "persistentvolumeclaims" and v in {"create", "delete", "update"}
        for _, res, v in flat
    )
    assert ("", "pods/log", "get") in flat
    assert ("serving.mistral-operator.dev", "mistralmodels/status", "patch") in flat
    assert not any(
        res == "mistralmodels" and v in {"create", "delete", "update"} for _, res, v in flat
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "replicaCnt=2"], "additional properties 'replicaCnt' not allowed"),
        (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
        (["--set", "peering.enabled=false"], "peering.enabled=false needs replicaCount <= 1"),
        (["--set", "watchNamespaces={team-a}"], "watchNamespaces needs peering.enabled=false"),
        (
            ["--set", "metrics.service.enabled=false,metrics.serviceMonitor.enabled=true"],
            "needs metrics.service.enabled",
        ),
    ],
)
def test_bad_values_fail_at_install_time(cluster: Cluster, values: list[str], message: str) -> None:
    result = cluster.helm("template", RELEASE, str(CHART), *values, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_install_upgrade_run_and_uninstall_keep_crds_and_models(
    cluster: Cluster, tmp_path: Path, weights_hub: StubHub
) -> None:
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"  # a rerun must not meet a namespace still going
    install_chart(cluster)
    deployment = cluster.get_json("deployment", RELEASE, "-n", SYSTEM_NAMESPACE)
    assert deployment["spec"]["replicas"] == 2

    # A GitOps change of values rolls through helm upgrade.
    install_chart(
        cluster, "--set", "replicaCount=3", "--set", "operator.nodeGraceSeconds=60",
        "--set", "operator.driftIntervalSeconds=120",
    )  # fmt: skip
    deployment = cluster.get_json("deployment", RELEASE, "-n", SYSTEM_NAMESPACE)
    assert deployment["spec"]["replicas"] == 3
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--node-grace-seconds=60" in args
    assert "--drift-interval-seconds=120" in args

    # The operator, with the chart's identity and peering, serves the quick start.
    try:
        cluster.kubectl("create", "namespace", namespace)
        # Cluster-wide, as the chart runs it: peering is cluster-wide.
        with run_operator(cluster, tmp_path, namespaces=(), peering="mistral-operator") as op:
            # The quick start as written, its weights from the session's stub hub (the
            # Secret a mirror's users would give it).
            hub_secret(cluster, namespace, weights_hub)
            quickstart = yaml.safe_load(
                (REPO_ROOT / "examples" / "quickstart-h200.yaml").read_text()
            )
            quickstart["spec"]["model"]["credentialsSecretRef"] = {"name": SECRET}
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(quickstart))
            result = cluster.kubectl(
                "wait", "-n", namespace, "--for=condition=Ready", f"mm/{MODEL}",
                "--timeout=90s", check=False, timeout=120,
            )  # fmt: skip
            if result.returncode != 0:  # say why: the model's status and every GPU pod
                status = cluster.kubectl("get", "mm", MODEL, "-n", namespace, "-o", "yaml")
                gpu_pods = cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False)
                raise AssertionError(
                    f"{result.stderr}\n{status.stdout}\n{gpu_pods.stdout}\n{op.log_tail()}"
                )
            assert "Forbidden" not in op.log_tail(400)
            peering = cluster.get_json("clusterkopfpeering", "mistral-operator")
            assert peering.get("status"), "the operator announced itself in the peering object"
            assert "mistral_operator_reconciles_total" in op.metrics()
        op.assert_clean()

        cluster.helm("uninstall", RELEASE, "-n", SYSTEM_NAMESPACE, "--wait")
        assert cluster.get_json("crd", names.CRD_NAME)["metadata"]["name"] == names.CRD_NAME
        assert cluster.get_json("mm", MODEL, "-n", namespace)["metadata"]["name"] == MODEL
    finally:
        # With no operator left to release its finalizer, an admin removes it by hand.
        cluster.kubectl(
            "patch", "mm", MODEL, "-n", namespace, "--type=merge",
            "-p", '{"metadata":{"finalizers":null}}', check=False,
        )  # fmt: skip
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        if cluster.helm("status", RELEASE, "-n", SYSTEM_NAMESPACE, check=False).returncode == 0:
            cluster.helm("uninstall", RELEASE, "-n", SYSTEM_NAMESPACE, "--wait", check=False)
    assert json.loads(cluster.helm("list", "-n", SYSTEM_NAMESPACE, "-o", "json").stdout) == []

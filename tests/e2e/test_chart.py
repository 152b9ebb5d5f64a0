"""The Helm chart as a GitOps pipeline and a cluster admin use it, with real helm."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from tests.support.chart import by_kind, template
from tests.support.cluster import REPO_ROOT, Cluster
from tests.support.operator import (
    CHART,
    RELEASE,
    SYSTEM_NAMESPACE,
    free_port,
    install_chart,
    run_operator,
)
from tests.support.stub_hub import StubHub
from tests.support.wait import wait_for
from tests.support.weights import SECRET, hub_secret

from mistral_operator.api import names
from mistral_operator.core.admission import WEBHOOK_PATH, webhook_configuration

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
    services = {d["metadata"]["name"]: d for d in by_kind(docs, "Service")}
    assert services[f"{RELEASE}-metrics"]["spec"]["ports"][0]["name"] == "metrics"
    assert not by_kind(docs, "ServiceMonitor")


def test_template_renders_the_webhook_the_operator_registers_out_of_cluster(
    cluster: Cluster,
) -> None:
    docs = template(cluster)
    (config,) = by_kind(docs, "ValidatingWebhookConfiguration")
    assert config["metadata"]["name"] == RELEASE
    (hook,) = config["webhooks"]
    service = hook["clientConfig"]["service"]
    assert service == {
        "name": f"{RELEASE}-webhook",
        "namespace": SYSTEM_NAMESPACE,
        "path": WEBHOOK_PATH,
        "port": 443,
    }
    # Everything but where it is reached is what `run --webhook=local` registers.
    (local,) = webhook_configuration(RELEASE, {}, failure_policy="Fail", timeout_seconds=5)[
        "webhooks"
    ]
    assert {k: v for k, v in hook.items() if k != "clientConfig"} == {
        k: v for k, v in local.items() if k != "clientConfig"
    }
    services = {d["metadata"]["name"]: d for d in by_kind(docs, "Service")}
    assert services[f"{RELEASE}-webhook"]["spec"]["ports"][0]["targetPort"] == "webhook"
    (deployment,) = by_kind(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "--webhook=service" in container["args"]
    assert f"--webhook-secret={RELEASE}-webhook-tls" in container["args"]
    assert {"name": "webhook", "containerPort": 9443} in container["ports"]
    # Ignore is a choice; the local mode renders no Service nor configuration.
    (ignoring,) = by_kind(
        template(cluster, "--set", "webhook.failurePolicy=Ignore"), "ValidatingWebhookConfiguration"
    )
    assert ignoring["webhooks"][0]["failurePolicy"] == "Ignore"
    local_docs = template(cluster, "--set", "webhook.mode=local")
    assert not by_kind(local_docs, "ValidatingWebhookConfiguration")
    assert f"{RELEASE}-webhook" not in {
        d["metadata"]["name"] for d in by_kind(local_docs, "Service")
    }
    none_docs = template(cluster, "--set", "webhook.mode=none")
    assert not any(d["metadata"]["name"].endswith("-webhook") for d in none_docs)


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
    # The webhook's certificate: one named Secret in the release namespace (a Role).
    (webhook_role,) = [
        r for r in by_kind(template(cluster), "Role") if r["metadata"]["name"].endswith("-webhook")
    ]
    assert webhook_role["metadata"]["namespace"] == SYSTEM_NAMESPACE
    named = [r for r in webhook_role["rules"] if r.get("resourceNames")]
    assert named == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [f"{RELEASE}-webhook-tls"],
            "verbs": ["get", "update"],
        }
    ]
    # In cluster the configuration is the chart's: the operator only patches its caBundle.
    assert not any(
        res == "validatingwebhookconfigurations" and v in {"create", "delete", "update"}
        for _, res, v in flat
    )
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
        (["--set", "webhook.mode=cluster"], "/webhook/mode"),
        (["--set", "webhook.timeoutSeconds=60"], "/webhook/timeoutSeconds"),
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


def test_in_cluster_the_operator_keeps_the_charts_configuration_trusted(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Mode `service`: the chart installs the configuration (a Service reference, no
    caBundle); a replica creates or renews the certificate Secret for the Service's names
    and patches the CA into the configuration. (The simulated nodes run no pods, so the
    API server cannot reach a replica through the Service here: the local mode's tests
    show the webhook answering.)"""
    install_chart(cluster, "--set", "webhook.mode=service")
    try:
        args = [
            "--webhook", "service", "--webhook-namespace", SYSTEM_NAMESPACE,
            "--webhook-port", str(free_port()), "--webhook-check-seconds", "5",
        ]  # fmt: skip
        with run_operator(cluster, tmp_path, namespaces=(), webhook=False, extra_args=args) as op:

            def trusted() -> bool:
                config = cluster.get_json("validatingwebhookconfiguration", RELEASE)
                bundle = config["webhooks"][0]["clientConfig"].get("caBundle")
                secret = cluster.kubectl(
                    "get", "secret", f"{RELEASE}-webhook-tls", "-n", SYSTEM_NAMESPACE,
                    "-o", "json", check=False,
                )  # fmt: skip
                if not bundle or secret.returncode != 0:
                    return False
                return bool(json.loads(secret.stdout)["data"]["ca.crt"] == bundle)

            wait_for(trusted, timeout=60, what="the chart's configuration trusting the CA")
            data = cluster.get_json("secret", f"{RELEASE}-webhook-tls", "-n", SYSTEM_NAMESPACE)
            cert = x509.load_pem_x509_certificate(base64.b64decode(data["data"]["tls.crt"]))
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert f"{RELEASE}-webhook.{SYSTEM_NAMESPACE}.svc" in sans.get_values_for_type(
                x509.DNSName
            )
            config = cluster.get_json("validatingwebhookconfiguration", RELEASE)
            assert "service" in config["webhooks"][0]["clientConfig"]
        op.assert_clean()
    finally:
        install_chart(cluster)  # back to mode local: helm removes the chart's configuration
    gone = cluster.kubectl("get", "validatingwebhookconfiguration", RELEASE, check=False)
    assert gone.returncode != 0

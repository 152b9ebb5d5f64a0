"""The validating webhook on the real API server (issue 14): a spec the operator could not
run is refused at `kubectl apply`, in the words the InvalidSpec condition uses, and the
webhook's certificate is created, trusted, renewed and replaced by the operator.

The operator runs out of cluster (tests/support/operator.py), registering the chart's
webhook at https://127.0.0.1:<port> (mode `local`); the certificate Secret is the chart's,
in the release namespace.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from tests.support.cluster import Cluster
from tests.support.models import condition
from tests.support.operator import (
    SYSTEM_NAMESPACE,
    WEBHOOK_CONFIGURATION,
    WEBHOOK_PORT,
    RunningOperator,
)
from tests.support.wait import wait_for

from mistral_operator.api import names
from mistral_operator.core import certificates as certs
from mistral_operator.core.admission import WEBHOOK_NAME, Refusal, check_spec
from mistral_operator.core.invalid_spec import INVALID

pytestmark = pytest.mark.integration

SECRET = "mistral-operator-webhook-tls"
# The CRD's rules cannot size a Compact replica the operator sizes itself (a search over
# the catalogue's memory arithmetic): 123B in bf16 does not fit two H100s.
UNFIT = {
    "model": {"profile": "mistral-large-2-123b"},
    "gpu": {"product": "H100", "gpusPerNode": 2},
    "parallelism": {"shape": "Compact"},
}
FITS = {"model": {"profile": "mistral-7b-v0.3"}, "gpu": {"product": "H100", "gpusPerNode": 2}}


def manifest(name: str, spec: dict[str, Any], replicas: int = 0) -> str:
    return json.dumps(
        {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": name},
            "spec": {**spec, "replicas": replicas},
        }
    )


def refusal_of(spec: dict[str, Any]) -> str:
    checked = check_spec({**spec, "replicas": 0})
    assert isinstance(checked, Refusal), "the planner must refuse this spec for the test to hold"
    return str(checked)


def apply(cluster: Cluster, namespace: str, text: str, *extra: str) -> Any:
    return cluster.kubectl("apply", "-n", namespace, "-f", "-", *extra, input=text, check=False)


def registered(cluster: Cluster) -> dict[str, Any]:
    found: dict[str, Any] = cluster.get_json(
        "validatingwebhookconfiguration", WEBHOOK_CONFIGURATION
    )
    return found


def wait_registered(cluster: Cluster) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def present() -> bool:
        result = cluster.kubectl(
            "get", "validatingwebhookconfiguration", WEBHOOK_CONFIGURATION, "-o", "json",
            check=False,
        )  # fmt: skip
        if result.returncode == 0:
            found.update(json.loads(result.stdout))
        return result.returncode == 0

    wait_for(present, timeout=30, what="the operator's webhook registration")
    return found


def stored_certs(cluster: Cluster) -> certs.WebhookCerts:
    data = cluster.get_json("secret", SECRET, "-n", SYSTEM_NAMESPACE)["data"]
    loaded = certs.WebhookCerts.from_data({k: base64.b64decode(v) for k, v in data.items()})
    assert loaded is not None, f"the Secret lacks a key: {sorted(data)}"
    return loaded


def served_certificate() -> bytes:
    """The certificate the webhook port presents now (PEM)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", WEBHOOK_PORT), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return ssl.DER_cert_to_PEM_cert(der).encode()


def same_certificate(a: bytes, b: bytes) -> bool:
    return x509.load_pem_x509_certificate(a) == x509.load_pem_x509_certificate(b)


def test_a_spec_the_planner_refuses_is_refused_at_apply_in_the_planners_words(
    cluster: Cluster, operator: RunningOperator, model_namespace: str
) -> None:
    wait_registered(cluster)
    expected = refusal_of(UNFIT)
    result = apply(cluster, model_namespace, manifest("unfit", UNFIT))
    assert result.returncode != 0, "the API server stored a spec the operator cannot run"
    assert f'admission webhook "{WEBHOOK_NAME}" denied the request: {expected}' in result.stderr
    # A server-side dry run (what a GitOps diff or `kubectl apply --dry-run=server` does)
    # is refused the same way, and stores nothing.
    dry = apply(cluster, model_namespace, manifest("unfit", UNFIT), "--dry-run=server")
    assert dry.returncode != 0
    assert expected in dry.stderr
    assert cluster.get_json("mm", "-n", model_namespace)["items"] == []
    # A spec the operator can run is stored as before.
    assert apply(cluster, model_namespace, manifest("fits", FITS)).returncode == 0


def test_a_spec_stored_without_the_webhook_reports_the_same_words_and_metadata_edits_pass(
    cluster: Cluster, operator: RunningOperator, model_namespace: str
) -> None:
    wait_registered(cluster)
    expected = refusal_of(UNFIT)
    # The registration is gone (as while no replica runs with failurePolicy Ignore): the
    # spec is stored, and the operator's condition says what the webhook would have.
    cluster.kubectl("delete", "validatingwebhookconfiguration", WEBHOOK_CONFIGURATION)
    stored = apply(cluster, model_namespace, manifest("stored", UNFIT))
    if stored.returncode != 0:  # the operator re-registered in between: say so plainly
        pytest.fail(f"the spec was refused before it could be stored: {stored.stderr}")

    def degraded_now() -> dict[str, Any] | None:
        return condition(cluster.get_json("mm", "stored", "-n", model_namespace), "Degraded")

    def reported() -> bool:
        got = degraded_now()
        return bool(got and got.get("reason") == INVALID)

    wait_for(reported, timeout=30, what="the InvalidSpec condition")
    degraded = degraded_now()
    assert degraded is not None
    assert degraded["message"] == expected

    # The operator registers the webhook again; from then on a metadata-only edit of the
    # stored model passes (matchConditions: only a changed spec is checked), and a spec
    # edit that is still wrong is refused.
    wait_registered(cluster)
    labelled = cluster.kubectl(
        "label", "mm", "stored", "-n", model_namespace, "team=serving", check=False
    )
    assert labelled.returncode == 0, labelled.stderr
    edited = cluster.kubectl(
        "patch", "mm", "stored", "-n", model_namespace, "--type=merge",
        "-p", json.dumps({"spec": {"runtime": {"contextLength": 8192}}}), check=False,
    )  # fmt: skip
    assert edited.returncode != 0
    assert WEBHOOK_NAME in edited.stderr
    # Deleting it never waits on the webhook either (the operator releases its finalizer).
    cluster.kubectl("delete", "mm", "stored", "-n", model_namespace, "--timeout=60s")


def test_the_certificate_is_trusted_renewed_and_replaced(
    cluster: Cluster, operator: RunningOperator, model_namespace: str
) -> None:
    config = wait_registered(cluster)
    stored = stored_certs(cluster)
    (hook,) = config["webhooks"]
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == stored.ca_bundle
    assert hook["clientConfig"]["url"] == f"https://127.0.0.1:{WEBHOOK_PORT}/{WEBHOOK_NAME}"
    assert hook["failurePolicy"] == "Fail"
    assert hook["sideEffects"] == "None"
    assert same_certificate(served_certificate(), stored.cert)

    # A serving certificate two thirds through its life (issued 250 days ago by the same
    # CA) is renewed by the operator's next check, and served without a restart.
    ca = x509.load_pem_x509_certificates(stored.ca_bundle)[0]
    old_now = datetime.now(UTC) - timedelta(days=250)
    aged = certs.renewed(
        certs.WebhookCerts(stored.ca_bundle, stored.ca_key, b"", b""),
        [str(m.value) for m in _sans(stored.cert)],
        old_now,
    )
    assert aged is not None
    aged_certs = aged[0]
    assert x509.load_pem_x509_certificates(aged_certs.ca_bundle)[0] == ca
    _replace_secret(cluster, aged_certs)

    def renewed_and_served() -> bool:
        now = stored_certs(cluster)
        return now.cert != aged_certs.cert and same_certificate(served_certificate(), now.cert)

    wait_for(renewed_and_served, timeout=60, what="the aged certificate renewed and served")
    renewed = stored_certs(cluster)
    assert renewed.ca_bundle == stored.ca_bundle, "a serving renewal keeps the CA"
    assert x509.load_pem_x509_certificate(renewed.cert).not_valid_after_utc > datetime.now(
        UTC
    ) + timedelta(days=300)

    # A deleted Secret is created again with a new CA, and the registration trusts it.
    cluster.kubectl("delete", "secret", SECRET, "-n", SYSTEM_NAMESPACE)

    def replaced() -> bool:
        result = cluster.kubectl("get", "secret", SECRET, "-n", SYSTEM_NAMESPACE, check=False)
        if result.returncode != 0:
            return False
        fresh = stored_certs(cluster)
        bundle = base64.b64decode(registered(cluster)["webhooks"][0]["clientConfig"]["caBundle"])
        return (
            fresh.ca_bundle != stored.ca_bundle
            and bundle == fresh.ca_bundle
            and same_certificate(served_certificate(), fresh.cert)
        )

    wait_for(replaced, timeout=60, what="a new CA stored, registered and served")
    # And the webhook still answers under it.
    refused = apply(cluster, model_namespace, manifest("unfit", UNFIT))
    assert refused.returncode != 0
    assert refusal_of(UNFIT) in refused.stderr


def _sans(pem: bytes) -> list[Any]:
    cert = x509.load_pem_x509_certificate(pem)
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def _replace_secret(cluster: Cluster, fresh: certs.WebhookCerts) -> None:
    data = {k: base64.b64encode(v).decode() for k, v in fresh.to_data().items()}
    patch = json.dumps({"data": data})
    cluster.kubectl("patch", "secret", SECRET, "-n", SYSTEM_NAMESPACE, "--type=merge", "-p", patch)

"""An object the operator writes that the real API server refuses (an admission policy's
422, a quota's 403) is reported on the model as Degraded=WriteRefused with one event, the
rest of the reconcile goes on, and the condition clears once the write is let through."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.caches import cached_quickstart
from tests.support.cluster import Cluster
from tests.support.models import (
    MODEL,
    apply,
    condition,
    enforce_quota,
    model,
    quickstart,
    running_groups,
)
from tests.support.operator import RunningOperator
from tests.support.stub_hub import StubHub
from tests.support.wait import wait_for

REFUSED = "WriteRefused"
RULE = "this namespace takes only Jobs named x-*"


def refused_condition(cluster: Cluster, ns: str) -> dict[str, Any] | None:
    degraded = condition(model(cluster, ns), "Degraded")
    if degraded and degraded["status"] == "True" and degraded["reason"] == REFUSED:
        return degraded
    return None


def refusal_events(cluster: Cluster, ns: str) -> list[dict[str, Any]]:
    events = cluster.get_json("events", "-n", ns, "--field-selector", f"reason={REFUSED}")
    return list(events["items"])


def said_since(running: RunningOperator, offset: int, pattern: str) -> bool:
    with running.log_path.open("rb") as log:
        log.seek(offset)
        return re.search(pattern, log.read().decode(errors="replace")) is not None


def cleared(cluster: Cluster, ns: str) -> dict[str, Any] | None:
    obj = model(cluster, ns)
    degraded, ready = condition(obj, "Degraded"), condition(obj, "Ready")
    if degraded and ready and degraded["status"] == "False" and ready["status"] == "True":
        return obj
    return None


@pytest.fixture
def fill_policy(cluster: Cluster, model_namespace: str) -> Iterator[str]:
    """A ValidatingAdmissionPolicy (and its binding) that refuses, in the test's namespace
    only, every Job not named x-*: the operator's fill Jobs get a 422 Invalid."""
    name = f"refuse-fills-{model_namespace}"
    scope = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": model_namespace}}}
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["batch"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["jobs"],
                    }
                ],
                **scope,
            },
            "validations": [
                {
                    "expression": "object.metadata.name.startsWith('x-')",
                    "message": RULE,
                    "reason": "Invalid",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"], "matchResources": scope},
    }
    listed = {"apiVersion": "v1", "kind": "List", "items": [policy, binding]}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(listed))

    def enforced() -> bool:
        probe = cluster.kubectl(
            "create", "job", "probe", "--image=registry.invalid/probe:1", "-n", model_namespace,
            "--dry-run=server", check=False,
        )  # fmt: skip
        return probe.returncode != 0 and RULE in probe.stderr

    wait_for(enforced, timeout=20, what="the policy to refuse Jobs in the namespace")
    yield name
    remove_policy(cluster, name)


def remove_policy(cluster: Cluster, name: str) -> None:
    cluster.kubectl(
        "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name,
        "--ignore-not-found", "--wait=false",
    )  # fmt: skip


def test_a_fill_job_refused_by_an_admission_policy_is_a_condition_until_it_is_let_through(
    cluster: Cluster,
    model_namespace: str,
    operator: RunningOperator,
    hub: StubHub,
    fill_policy: str,
) -> None:
    ns = model_namespace
    start = operator.log_size()
    apply(cluster, ns, cached_quickstart(hub))  # a revision no node holds: a fill is needed

    degraded = wait_for(
        lambda: refused_condition(cluster, ns), timeout=30, what="Degraded=WriteRefused"
    )
    message = degraded["message"]
    job = re.escape(f"{MODEL}-fill-") + "[0-9a-f]+"
    assert re.fullmatch(
        rf"the API server refused to apply Job/({job}): HTTP 422 Invalid: "
        rf'jobs.batch "\1" is forbidden: ValidatingAdmissionPolicy {re.escape(repr(fill_policy))} '
        rf"with binding {re.escape(repr(fill_policy))} denied request: {re.escape(RULE)}",
        message,
    ), message
    obj = model(cluster, ns)
    assert obj["status"]["phase"] == "Degraded"
    assert (condition(obj, "Ready") or {}).get("status") == "False"
    # The rest of the reconcile was done: the cache mark, the Services, the status.
    assert cluster.get_json("service", MODEL, "-n", ns)["metadata"]["name"] == MODEL
    assert obj["status"]["cache"]["nodes"], "the fill is recorded as waiting"
    assert cluster.get_json("jobs", "-n", ns)["items"] == []

    # Tried again after its backoff (a quiet log line), and no second event.
    wait_for(
        lambda: said_since(operator, start, rf"{ns}/{MODEL}: refused again \(attempt 2, "),
        timeout=20,
        what="the operator to try the Job again",
    )
    events = refusal_events(cluster, ns)
    assert [(e["type"], e["message"], e.get("count", 1)) for e in events] == [
        ("Warning", message, 1)
    ]

    remove_policy(cluster, fill_policy)
    ready = wait_for(lambda: cleared(cluster, ns), timeout=90, what="the model Ready, not Degraded")
    assert (condition(ready, "Degraded") or {}).get("reason") == "AsExpected"
    assert ready["status"]["phase"] == "Ready"
    assert sorted(running_groups(cluster, ns)) == ["g0"]


@pytest.mark.usefixtures("operator")
def test_services_refused_by_a_quota_are_reported_while_the_groups_start(
    cluster: Cluster, model_namespace: str
) -> None:
    """403 from a ResourceQuota: the groups do not need the Services to start, so they do."""
    ns = model_namespace
    enforce_quota(cluster, ns, "no-services", {"services": "0"})
    apply(cluster, ns, quickstart(replicas=1))

    def refused_and_running() -> dict[str, Any] | None:
        found = refused_condition(cluster, ns)
        return found if found and running_groups(cluster, ns) else None

    degraded = wait_for(refused_and_running, timeout=60, what="g0 running and the Services refused")
    message = degraded["message"]
    # The quota's message names each Service: one clause each.
    for service in (f"{MODEL}-ranks", MODEL):
        assert (
            f"the API server refused to apply Service/{service}: HTTP 403 Forbidden: "
            f'services "{service}" is forbidden: exceeded quota: no-services'
        ) in message, message
    assert [e["message"] for e in refusal_events(cluster, ns)] == [message]

    cluster.kubectl("delete", "resourcequota", "no-services", "-n", ns)
    wait_for(lambda: cleared(cluster, ns), timeout=60, what="the model Ready, not Degraded")
    assert cluster.get_json("service", MODEL, "-n", ns)["metadata"]["name"] == MODEL

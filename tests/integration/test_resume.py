"""An operator restart: models found at start are resumed, unchanged ones left alone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.audit import AuditLog
from tests.support.cluster import Cluster
from tests.support.models import MODEL, pods, running_groups, serve_multinode, wait_ready
from tests.support.operator import install_chart, run_operator
from tests.support.wait import holds_for, wait_for

# Namespaces only this module's operators watch (the shared one watches rt-*).
PREFIX = "rs-"


@pytest.fixture
def resume_namespace(cluster: Cluster, mistral_crd: str) -> Iterator[str]:
    install_chart(cluster, "--set", "installCRDs=false")
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def workdir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


def test_a_restarted_operator_resumes_its_models(
    cluster: Cluster, resume_namespace: str, tmp_path: Path
) -> None:
    ns = resume_namespace
    with run_operator(cluster, workdir(tmp_path, "first"), namespaces=(f"{PREFIX}*",)) as first:
        serve_multinode(cluster, ns, replicas=1)
        wait_for(
            lambda: any(
                p["metadata"]["labels"].get("mistral-operator.dev/serving") == "true"
                for p in pods(cluster, ns)
            ),
            timeout=10,
            what="the leader routed",
        )
    first.assert_clean()

    # Nothing changed while it was away: the new operator writes no pod.
    audit = AuditLog.of(cluster)
    with run_operator(cluster, workdir(tmp_path, "second"), namespaces=(f"{PREFIX}*",)) as second:
        holds_for(
            lambda: not audit.writes(user=second.user, resource="pods", namespace=ns),
            duration=5,
            what="no pod writes after a restart with nothing to do",
            detail=lambda: audit.writes(user=second.user, resource="pods", namespace=ns),
        )
    second.assert_clean()

    # A worker deleted while no operator runs: the next one finds it and heals the group.
    before = {p["metadata"]["uid"] for p in pods(cluster, ns)}
    cluster.kubectl("delete", "pod", f"{MODEL}-g0-1", "-n", ns)
    with run_operator(cluster, workdir(tmp_path, "third"), namespaces=(f"{PREFIX}*",)) as third:

        def healed() -> bool:
            members = running_groups(cluster, ns).get("g0", [])
            return len(members) == 2 and before.isdisjoint(p["metadata"]["uid"] for p in members)

        wait_for(healed, timeout=30, what="g0 recreated by the resumed operator")
        wait_ready(cluster, ns)
        # Delete the model while an operator runs to release its finalizer.
        cluster.kubectl("delete", "mm", MODEL, "-n", ns, "--timeout=60s", timeout=90)
    third.assert_clean()

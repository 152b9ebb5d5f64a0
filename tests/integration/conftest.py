"""Integration fixtures: the process kubelet for the whole session, the generated CRD
installed and established, the operator, and a namespace it watches."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.cluster import REPO_ROOT, Cluster
from tests.support.nodes import restore_node
from tests.support.operator import RunningOperator, install_chart, run_operator
from tests.support.process_kubelet import ProcessKubelet, shared_kubelet
from tests.support.stub_hub import StubHub, run_stub_hub
from tests.support.weights import hub_secret

from mistral_operator.api import names

CRD_PATH = REPO_ROOT / "crds" / names.CRD_FILENAME
# Namespaces the test operator watches; other tests' models stay out of its way.
OPERATED_PREFIX = "rt-"


@pytest.fixture(scope="session", autouse=True)
def process_kubelet(cluster: Cluster) -> Iterator[ProcessKubelet]:
    """The session's process kubelet (docs/test-platform.md): it runs cache-fill pods as
    local processes and holds pods whose hostPath Directory is missing on their node.

    Each node's disk is `node_root / <node>`: `process_kubelet.host_path(node, path)` is
    the directory behind `hostPath: {path}` there, for a test to seed or read.
    """
    with shared_kubelet(cluster, lambda: cluster.node_disks) as agent:
        yield agent


@pytest.fixture(scope="session")
def node_root(process_kubelet: ProcessKubelet) -> Path:
    """Where the simulated nodes' disks are: `<node_root>/<node>/<hostPath>`."""
    return process_kubelet.root


@pytest.fixture(scope="module")
def webhook() -> bool:
    """Whether the module's operator serves and registers the validating webhook; a module
    that must store specs the webhook would refuse overrides this with False."""
    return True


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, mistral_crd: str, tmp_path_factory: pytest.TempPathFactory, webhook: bool
) -> Iterator[RunningOperator]:
    """The operator, run as the chart's ServiceAccount, watching the `rt-*` namespaces."""
    # The CRD is already applied by `mistral_crd`; the chart brings the identity and RBAC.
    install_chart(cluster, "--set", "installCRDs=false")
    with run_operator(
        cluster,
        tmp_path_factory.mktemp("operator"),
        namespaces=(f"{OPERATED_PREFIX}*",),
        webhook=webhook,
    ) as running:
        yield running


@pytest.fixture
def model_namespace(
    cluster: Cluster, operator: RunningOperator, weights_hub: StubHub
) -> Iterator[str]:
    """A fresh namespace the operator watches, with the Secret that points its models'
    fills at the session's stub hub; its models are deleted (and their finalizers
    released by the running operator) before the namespace goes."""
    name = f"{OPERATED_PREFIX}{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    hub_secret(cluster, name, weights_hub)
    yield name
    cluster.kubectl("delete", "mistralmodels", "--all", "-n", name, "--timeout=60s", check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def hub(cluster: Cluster, model_namespace: str) -> Iterator[StubHub]:
    """A stub hub of this test's own, and the Secret that points the namespace's fills at it
    (in place of the session's)."""
    with run_stub_hub() as stub:
        hub_secret(cluster, model_namespace, stub)
        yield stub


@pytest.fixture
def broken_nodes(cluster: Cluster) -> Iterator[list[str]]:
    """Nodes a test breaks; each is healed afterwards, whatever the test did to it."""
    broken: list[str] = []
    yield broken
    for node in broken:
        restore_node(cluster, node)


@pytest.fixture(autouse=True)
def operator_logs_no_unexpected_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that runs the operator fails if the operator logged an error it did not expect.

    Expected ones are named with `@pytest.mark.operator_errors(regex, ...)`.
    """
    if "operator" not in request.fixturenames:
        yield
        return
    running: RunningOperator = request.getfixturevalue("operator")
    start = running.log_size()
    yield
    marker = request.node.get_closest_marker("operator_errors")
    expected = tuple(marker.args) if marker else ()
    running.assert_clean(start, expected)

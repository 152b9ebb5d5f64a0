"""End-to-end fixtures: the session's process kubelet, as in tests/integration."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.support.cluster import Cluster
from tests.support.process_kubelet import ProcessKubelet, shared_kubelet


@pytest.fixture(scope="session", autouse=True)
def process_kubelet(cluster: Cluster) -> Iterator[ProcessKubelet]:
    """The one process kubelet of the session (shared with tests/integration's fixture):
    the chart's models need it for their cache fills and hostPath mounts."""
    with shared_kubelet(cluster, lambda: cluster.node_disks) as agent:
        yield agent

"""Shared fixtures: the local cluster for integration and e2e tests, a fresh namespace per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mistral_operator.api import names
from tests.support.cluster import REPO_ROOT, Cluster
from tests.support.stub_hub import StubHub, run_stub_hub
from tests.support.weights import serve_weights

CRD_PATH = REPO_ROOT / "crds" / names.CRD_FILENAME

TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the tier of the folder it lives in."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    """The local control plane, started once per session or reused if it is up.

    It is left running for the next session; `make test` stops it at the end.
    """
    return Cluster.up(os.environ.get("TOPOLOGY", "h200"))


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace, deleted (without waiting) after the test."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def weights_hub() -> Iterator[StubHub]:
    """A stub hub serving the quick start's (small, generated) weights for the session:
    models in tests name it through the Secret tests.support.weights.hub_secret writes."""
    with run_stub_hub() as hub:
        serve_weights(hub)
        yield hub


@pytest.fixture(scope="session")
def mistral_crd(cluster: Cluster) -> str:
    """Apply the committed CRD (server-side) and wait until the API server serves it."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        f"crd/{names.CRD_NAME}",
        "--timeout=60s",
        timeout=90,
    )
    return names.CRD_NAME

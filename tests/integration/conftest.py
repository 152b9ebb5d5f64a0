"""Integration fixtures for the MistralModel API: the generated CRD installed and established."""

from __future__ import annotations

import pytest
from tests.support.cluster import REPO_ROOT, Cluster

from mistral_operator.api import names

CRD_PATH = REPO_ROOT / "crds" / names.CRD_FILENAME


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

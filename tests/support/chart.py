"""The chart as `helm template` renders it."""

from __future__ import annotations

from typing import Any

import yaml

from tests.support.cluster import Cluster
from tests.support.operator import CHART, RELEASE, SYSTEM_NAMESPACE


def template(cluster: Cluster, *values: str) -> list[dict[str, Any]]:
    out = cluster.helm(
        "template", RELEASE, str(CHART), "-n", SYSTEM_NAMESPACE, "--include-crds", *values
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]

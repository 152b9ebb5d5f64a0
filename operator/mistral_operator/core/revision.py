"""Revisions and content hashes: stable digests of what pods and caches depend on."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mistral_operator.api.spec import MistralModelSpec

# Spec parts that change what runs in a pod; replicas, autoscaling and rollout do not.
_POD_AFFECTING = ("model", "runtime", "capabilities", "gpu", "parallelism", "placement", "cache")


def digest(value: Any, length: int = 10) -> str:
    """A short, stable hash of JSON-able data (key order does not matter)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def pod_revision(spec: MistralModelSpec) -> str:
    """The revision label of a spec: equal for specs that render the same pods."""
    data = spec.model_dump(mode="json", by_alias=True, include=set(_POD_AFFECTING))
    return digest(data)


def cache_key(source: str, revision: str) -> str:
    """Where a (source, revision) pair is cached: equal for every model that shares it."""
    return digest({"source": source, "revision": revision}, length=16)

"""Revisions and content hashes: stable digests of what pods and caches depend on."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def digest(value: Any, length: int = 10) -> str:
    """A short, stable hash of JSON-able data (key order does not matter)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def cache_key(source: str, revision: str) -> str:
    """Where a (source, revision) pair is cached: equal for every model that shares it."""
    return digest({"source": source, "revision": revision}, length=16)

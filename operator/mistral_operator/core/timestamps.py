"""Kubernetes timestamps (RFC 3339, UTC, `Z`): reading and writing them in one place."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def format_time(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def parse_time(value: Any) -> datetime | None:
    """A timestamp as the API sends it (a string) or as some clients hand it (a datetime)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None

"""Automatic rollback: when the update revision failed, serve the last good one again.

A rollout fails when it passes its progress deadline or when groups of its revision
failed ``FAILURES_TO_FAIL`` times. The failed revision is written to
``status.rollout.failedRevision``; while the spec still renders that revision and
``rollout.autoRollback`` is on, every decision targets the last good revision instead,
rendered from the spec its ControllerRevision keeps. Old groups are that revision: they
are left alone, and the failed revision's groups are removed. The spec is not touched:
a new spec (a new revision) starts a new rollout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mistral_operator.core.revision_history import stored_spec
from mistral_operator.core.snapshot import Observed

FAILURES_TO_FAIL = 3
# What a rollback takes from the spec as written rather than from the stored one: how
# many groups and how they roll and recover, which no pod renders.
LIVE_FIELDS = ("replicas", "autoscaling", "rollout", "groupFailurePolicy")


def failed_revision(observed: Observed) -> str | None:
    value = (observed.status.get("rollout") or {}).get("failedRevision")
    return str(value) if value else None


def last_good_revision(observed: Observed) -> str | None:
    value = observed.status.get("currentRevision")
    return str(value) if value else None


def rollback_spec(observed: Observed, update_revision: str) -> Mapping[str, Any] | None:
    """The spec to serve instead of the written one, or None to follow the spec.

    Only when the spec's revision is the one that failed, automatic rollback is on, and
    the last good revision's spec is still kept.
    """
    spec = observed.spec
    if not (spec.get("rollout") or {}).get("autoRollback", True):
        return None
    good = last_good_revision(observed)
    if failed_revision(observed) != update_revision or good is None or good == update_revision:
        return None
    stored = stored_spec(observed.revisions, good)
    if stored is None:
        return None
    merged = {k: v for k, v in stored.items() if k not in LIVE_FIELDS}
    merged.update({k: spec[k] for k in LIVE_FIELDS if k in spec})
    return merged

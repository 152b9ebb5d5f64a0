"""Revision history: one ControllerRevision per pod revision, as a StatefulSet keeps.

Each holds the spec that rendered the revision (``data.spec``), so a rollback (automatic,
or by hand with kubectl) can read it back. The last good revision, the one every group
ran after the last completed rollout, is ``status.currentRevision`` alone, as a
StatefulSet's is: its ControllerRevision is ``<model>-<revision>``. (Earlier versions
also labelled it ``last-good``, a second write per rollout that could disagree with the
status; a revision still carrying that label is written once without it.) The newest
``HISTORY_LIMIT`` revisions are kept, and always the update and the last good one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mistral_operator.core import labels as L  # noqa: N812 - short, read everywhere here
from mistral_operator.core.render import ModelRef
from mistral_operator.core.snapshot import Deletion, Plan

HISTORY_LIMIT = 10
LEGACY_LAST_GOOD = f"{L.PREFIX}/last-good"  # no longer written; removed where found


def revision_object_name(model: str, revision: str) -> str:
    return f"{model}-{revision}"


def render_revision(
    model: ModelRef, revision: str, number: int, data: Mapping[str, Any]
) -> dict[str, Any]:
    labels = {L.REVISION: revision}
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": model.metadata(revision_object_name(model.name, revision), labels),
        "revision": number,
        "data": dict(data),
    }


def by_revision(objects: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {
        o["metadata"]["labels"][L.REVISION]: o
        for o in objects
        if L.REVISION in (o["metadata"].get("labels") or {})
    }


def stored_spec(objects: Sequence[Mapping[str, Any]], revision: str) -> Mapping[str, Any] | None:
    """The spec that rendered ``revision``, if its ControllerRevision is kept."""
    found = by_revision(objects).get(revision)
    spec = ((found or {}).get("data") or {}).get("spec")
    return spec if isinstance(spec, Mapping) else None


def plan_history(
    plan: Plan,
    model: ModelRef,
    objects: Sequence[Mapping[str, Any]],
    update: tuple[str, Mapping[str, Any]],
    last_good: str | None,
) -> None:
    """Store the update revision (with its spec), trim the rest; keep the last good one."""
    existing = by_revision(objects)
    revision, spec = update
    numbers = [int(o.get("revision") or 0) for o in existing.values()]
    if revision not in existing:
        number = max(numbers, default=0) + 1
        plan.apply.append(render_revision(model, revision, number, {"spec": dict(spec)}))
    for rev, obj in existing.items():
        if LEGACY_LAST_GOOD in (obj["metadata"].get("labels") or {}):
            # Data is immutable: the same data goes back, without the old mark.
            number = int(obj.get("revision") or 0)
            plan.apply.append(render_revision(model, rev, number, obj.get("data") or {}))
    protected = {revision} | ({last_good} if last_good else set())
    others = [kv for kv in sorted(existing.items(), key=lambda kv: -int(kv[1].get("revision") or 0))
              if kv[0] not in protected]  # fmt: skip
    for _, obj in others[HISTORY_LIMIT - len(protected) :]:
        meta = obj["metadata"]
        plan.delete.append(
            Deletion(
                "ControllerRevision",
                meta["name"],
                meta.get("uid", ""),
                f"revision history is kept to {HISTORY_LIMIT}",
                api_version="apps/v1",
            )
        )

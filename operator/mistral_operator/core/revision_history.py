"""Revision history: one ControllerRevision per pod revision, as a StatefulSet keeps.

Each holds the spec that rendered the revision (``data.spec``), so a rollback (automatic,
or by hand with kubectl) can read it back. The last good revision, the one every group
ran after the last completed rollout, carries the ``last-good`` label. The newest
``HISTORY_LIMIT`` revisions are kept, and always the update and the last good one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mistral_operator.core import labels as L  # noqa: N812 - short, read everywhere here
from mistral_operator.core.render import ModelRef
from mistral_operator.core.snapshot import Deletion, Plan

HISTORY_LIMIT = 10
LAST_GOOD = f"{L.PREFIX}/last-good"


def revision_object_name(model: str, revision: str) -> str:
    return f"{model}-{revision}"


def render_revision(
    model: ModelRef, revision: str, number: int, data: Mapping[str, Any], *, good: bool
) -> dict[str, Any]:
    labels = {L.REVISION: revision} | ({LAST_GOOD: "true"} if good else {})
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
    """Store the update revision (with its spec), move the last-good mark, trim the rest."""
    existing = by_revision(objects)
    revision, spec = update
    numbers = [int(o.get("revision") or 0) for o in existing.values()]
    if revision not in existing:
        number = max(numbers, default=0) + 1
        plan.apply.append(
            render_revision(
                model, revision, number, {"spec": dict(spec)}, good=revision == last_good
            )
        )
    for rev, obj in existing.items():
        marked = (obj["metadata"].get("labels") or {}).get(LAST_GOOD) == "true"
        if marked != (rev == last_good):
            # Data is immutable: the same data goes back with the mark moved.
            plan.apply.append(
                render_revision(
                    model, rev, int(obj.get("revision") or 0), obj.get("data") or {},
                    good=rev == last_good,
                )
            )  # fmt: skip
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

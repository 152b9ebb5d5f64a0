"""The cache GC loop: list what the core needs, fresh from the API server, and execute.

One round every ``GcSettings.interval_seconds``, in a thread (the Kubernetes client
blocks). Every list is a fresh read, not a watch cache: a removal is decided only on
what the API server says now. A round that fails is logged as a warning; the next one
starts from scratch, and every step of a round can be repeated without harm (the Job
has one name per node and is created only when none exists; a result read twice drops
the same labels twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mistral_operator.api import names
from mistral_operator.core import labels as L  # noqa: N812 - short, read everywhere here
from mistral_operator.core.cache_gc import (
    CACHE_GC,
    GcInput,
    GcPlan,
    GcSettings,
    plan_gc,
    render_event,
)
from mistral_operator.shell.kubeapi import KubeApi, is_transient

log = logging.getLogger(__name__)


@dataclass
class CacheGc:
    api: KubeApi
    settings: GcSettings = field(default_factory=GcSettings)
    # Model uid -> when a round first saw its status lag its generation (see core).
    unsettled_since: dict[str, datetime] = field(default_factory=dict)

    def observe(self) -> GcInput:
        api, namespace = self.api, self.settings.namespace
        return GcInput(
            nodes=api.list("v1", "Node"),
            models=api.list(names.API_VERSION, names.KIND),
            pods=api.list("v1", "Pod", label_selector=L.MODEL),
            fill_jobs=api.list("batch/v1", "Job", label_selector=f"{L.COMPONENT}={L.CACHE_FILL}"),
            gc_jobs=api.list("batch/v1", "Job", namespace, f"{L.COMPONENT}={CACHE_GC}"),
            gc_pods=api.list("v1", "Pod", namespace, f"{L.COMPONENT}={CACHE_GC}"),
            now=datetime.now(UTC),
            settings=self.settings,
            unsettled_since=dict(self.unsettled_since),
        )

    def run_once(self) -> GcPlan:
        plan = plan_gc(self.observe())
        self.unsettled_since = plan.unsettled_since
        self.execute(plan)
        return plan

    def execute(self, plan: GcPlan) -> None:
        api = self.api
        for level, line in plan.log:
            log.log(level, line)
        for deletion in plan.delete:
            api.delete("batch/v1", "Job", deletion.namespace, deletion.name, uid=deletion.uid)
        for node, notes in plan.node_annotations.items():
            api.patch_annotations("v1", "Node", None, node, notes)
        for node, node_labels in plan.node_labels.items():
            api.patch_labels("v1", "Node", None, node, node_labels)
        for job in plan.create:
            api.ensure(job)
        # Kopf posts events only from its resource handlers: these are created directly.
        now = datetime.now(UTC)
        for event in plan.events:
            api.ensure(render_event(event, now))


async def run_forever(gc: CacheGc) -> None:
    """Rounds until cancelled; a failed round is a warning (a traceback only for a bug)."""
    while True:
        try:
            await asyncio.to_thread(gc.run_once)
        except Exception as exc:
            if is_transient(exc):
                log.warning("cache GC round failed, trying again next round: %s", exc)
            else:
                log.warning("cache GC round failed, trying again next round", exc_info=True)
        await asyncio.sleep(gc.settings.interval_seconds)


def start(gc: CacheGc) -> asyncio.Task[Any]:
    return asyncio.create_task(run_forever(gc), name="cache GC")


async def stop(task: asyncio.Task[Any] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

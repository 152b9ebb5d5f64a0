"""The cache GC loop: list what the core needs, fresh from the API server, and execute.

One round every ``GcSettings.interval_seconds``, in a thread (the Kubernetes client
blocks). Every list is a fresh read, not a watch cache: a removal is decided only on
what the API server says now. Nodes, claims, models, pods and Jobs are listed in every
namespace (a claim's GC Job runs in the claim's). A round that fails is logged as a
warning; the next one starts from scratch, and every step of a round can be repeated
without harm (the Job has one name per node or claim and is created only when none
exists; a result read twice drops the same labels twice). A node or claim deleted, or a
namespace being deleted, between the lists and the writes is passed over: the next round
no longer sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from mistral_operator.api import names
from mistral_operator.core import labels as L  # noqa: N812 - short, read everywhere here
from mistral_operator.core.cache_gc import (
    CACHE_GC,
    GcInput,
    GcPlan,
    GcSettings,
    Holder,
    plan_gc,
    render_event,
)
from mistral_operator.shell.kubeapi import KubeApi, is_transient

log = logging.getLogger(__name__)
# KubeApi.patch_labels or .patch_annotations: (api_version, kind, namespace, name, values).
MetadataPatch = Callable[[str, str, str | None, str, Mapping[str, str | None]], None]


@dataclass
class CacheGc:
    api: KubeApi
    settings: GcSettings = field(default_factory=GcSettings)
    # Model uid -> when a round first saw its status lag its generation (see core).
    unsettled_since: dict[str, datetime] = field(default_factory=dict)

    def observe(self) -> GcInput:
        api = self.api
        gc_selector = f"{L.COMPONENT}={CACHE_GC}"
        return GcInput(
            nodes=api.list("v1", "Node"),
            claims=api.list("v1", "PersistentVolumeClaim"),
            models=api.list(names.API_VERSION, names.KIND),
            pods=api.list("v1", "Pod", label_selector=L.MODEL),
            fill_jobs=api.list("batch/v1", "Job", label_selector=f"{L.COMPONENT}={L.CACHE_FILL}"),
            gc_jobs=api.list("batch/v1", "Job", label_selector=gc_selector),
            gc_pods=api.list("v1", "Pod", label_selector=gc_selector),
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
        for holder, notes in plan.annotations.items():
            self._mark(holder, api.patch_annotations, notes)
        for holder, holder_labels in plan.labels.items():
            self._mark(holder, api.patch_labels, holder_labels)
        for job in plan.create:
            self._create(job)
        # Kopf posts events only from its resource handlers: these are created directly.
        now = datetime.now(UTC)
        for event in plan.events:
            self._create(render_event(event, now))

    def _mark(self, holder: Holder, patch: MetadataPatch, values: dict[str, str | None]) -> None:
        """Patch the labels or annotations of the Node or PersistentVolumeClaim."""
        try:
            patch("v1", holder.api_kind, holder.namespace or None, holder.name, values)
        except ApiException as exc:
            if exc.status != 404:
                raise
            log.info("cache GC: %s is gone; not marked", holder)

    def _create(self, obj: dict[str, Any]) -> None:
        """Create a Job or an Event unless it exists; not in a namespace being deleted."""
        try:
            self.api.ensure(obj)
        except ApiException as exc:
            if not _namespace_terminating(exc):
                raise
            meta = obj["metadata"]
            log.info(
                "cache GC: namespace %s is being deleted; no %s made",
                meta["namespace"],
                obj["kind"],
            )


def _namespace_terminating(exc: ApiException) -> bool:
    """The API server's refusal of a new object in a namespace being deleted (a claim's
    namespace, deleted with the claim)."""
    return exc.status == 403 and "NamespaceTerminating" in str(exc.body or "")


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

"""Operator settings: Kopf's, chosen once at startup, and the options of `mistral-operator run`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import kopf

from mistral_operator.core import labels as L  # noqa: N812 - short, read everywhere here
from mistral_operator.core.cache_gc import GcSettings
from mistral_operator.core.fill_jobs import FillSettings


@dataclass(frozen=True)
class RuntimeOptions:
    """What `mistral-operator run` was asked for."""

    metrics_port: int | None = 8080
    node_grace_seconds: float = 40.0
    # Events and the core's own deadlines drive reconciles; this catches anything missed.
    drift_interval_seconds: float = 60.0
    fill: FillSettings = field(default_factory=FillSettings)
    cache_gc: GcSettings = field(default_factory=GcSettings)
    peering_name: str = "mistral-operator"
    # How long a replica's peering record counts as alive: a killed active replica is
    # replaced by a standby within about this long (Kopf's default is 60 s).
    peering_lifetime_seconds: int = 15
    standalone: bool = True


def apply_settings(settings: kopf.OperatorSettings, options: RuntimeOptions) -> None:
    # Kopf's bookkeeping lives in annotations under our prefix: status is ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=L.PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=L.PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{L.PREFIX}/finalizer"
    settings.peering.name = options.peering_name
    # With peering on, a missing peering object is an error: running unpeered would
    # let every replica act at once.
    settings.peering.mandatory = not options.standalone
    settings.peering.lifetime = options.peering_lifetime_seconds
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.execution.max_workers = 16

"""Reading SGLang's queue gauges from the pods of a model's groups, in parallel.

Every pod of a group is read and the gauges summed: with attention data parallelism
each node's scheduler reports its own requests. A rank that serves no metrics (HTTP
404: a worker's stand-in health server) adds nothing. The results feed both the
drain (is a leaving group idle?) and the autoscaler (how much is queued?).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp

from mistral_operator.core import labels as L  # noqa: N812 - short, read everywhere here
from mistral_operator.core.sglang_metrics import GroupSample, PodSample, queue_gauges
from mistral_operator.shell import metrics

log = logging.getLogger(__name__)
TIMEOUT_SECONDS = 2.0


async def _read(session: aiohttp.ClientSession, pod: Mapping[str, Any], port: int) -> PodSample:
    name, ip = pod["metadata"]["name"], (pod.get("status") or {}).get("podIP")
    url = f"http://{ip}:{port}/metrics"
    try:
        if not ip:
            raise _NoDataError("no pod IP")
        async with session.get(url) as response:
            if response.status == 404:
                return PodSample(name, absent=True)
            if response.status != 200:
                raise _NoDataError(f"{url}: HTTP {response.status}")
            gauges = queue_gauges(await response.text())
        if gauges is None:
            raise _NoDataError(f"{url}: no sglang:num_queue_reqs or num_running_reqs")
    except aiohttp.ClientConnectorError as exc:
        refused = isinstance(exc.os_error, ConnectionRefusedError)
        why = "connection refused" if refused else str(exc.os_error or exc)
        return PodSample(name, refused=refused, error=f"{url}: {why}")
    except (TimeoutError, aiohttp.ClientError) as exc:
        return PodSample(name, error=f"{url}: {type(exc).__name__} {exc}".rstrip())
    except _NoDataError as exc:
        return PodSample(name, error=str(exc))
    return PodSample(name, queued=gauges[0], running=gauges[1])


class _NoDataError(Exception):
    """A pod answered, but not with the gauges."""


async def scrape_groups(
    namespace: str,
    model: str,
    pods: Sequence[Mapping[str, Any]],
    groups: set[str],
    port: int = L.SGLANG_PORT,
) -> dict[str, GroupSample]:
    """The summed gauges of each of ``groups``, read from all its pods at once."""
    members = [
        p
        for p in pods
        if (p["metadata"].get("labels") or {}).get(L.GROUP) in groups
        and not p["metadata"].get("deletionTimestamp")
    ]
    if not members:
        return {}
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
        samples = await asyncio.gather(*(_read(session, p, port) for p in members))
    metrics.SCRAPE_SECONDS.labels(namespace=namespace, model=model).observe(
        time.monotonic() - started
    )
    at = datetime.now(UTC)
    by_group: dict[str, list[PodSample]] = {}
    for pod, sample in zip(members, samples, strict=True):
        by_group.setdefault(pod["metadata"]["labels"][L.GROUP], []).append(sample)
        if sample.error and not sample.refused:
            metrics.SCRAPE_ERRORS.labels(namespace=namespace, model=model).inc()
            log.debug("metrics of %s/%s: %s", namespace, sample.pod, sample.error)
    return {group: GroupSample.of(found, at) for group, found in by_group.items()}


def groups_to_read(body: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> set[str]:
    """Groups whose gauges the next reconcile needs: those draining (is each idle yet?)
    and, with the built-in autoscaler, those whose leaders take requests."""
    status = body.get("status") or {}
    wanted = {
        g["name"]
        for g in status.get("groups") or []
        if g.get("state") == "Draining" and g.get("drainStarted")
    }
    scaling = (body.get("spec") or {}).get("autoscaling") or {}
    if scaling and scaling.get("enabled", True):
        wanted |= {
            labels[L.GROUP]
            for p in pods
            if (labels := p["metadata"].get("labels") or {}).get(L.SERVING) == "true"
            and labels.get(L.ROLE) == L.LEADER
        }
    return wanted

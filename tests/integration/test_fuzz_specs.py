"""Fuzzed specs against a real API server and operator (issue 13): the operator never
crashes, and never touches another model's pods.

A bystander (the quick start, one group) serves first. Then FUZZ_SPECS specs (default 25;
tests.support.spec_strategies: drawn from the CRD schema and mutated from the examples,
half of them specs the operator's model accepts; FUZZ_SEED repeats a run) are sent one
after the other with `kubectl apply`: every other one as an edit of the same model
(`fuzzed`, created from the quick start; the immutable model.profile and cache.hostPath
are carried over from it, as a person editing it would), the rest as new models
(`fuzzed-<n>`, deleted once the operator has answered). The API server refuses some
(schema, CEL); for each one it takes, the test waits until the operator has reported on
that generation, planned or InvalidSpec.

Throughout, a watch on the bystander's pods fails the test on any deletion, new pod,
label change or loss of readiness; after each spec the operator must be alive and the
bystander's pods the same ones, Ready. The operator's log must hold no traceback or error
and no reconcile may end in an exception (checked here, and the log by the integration
conftest after every test).
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.support.cluster import Cluster
from tests.support.models import condition, quickstart
from tests.support.operator import RunningOperator
from tests.support.rollout import LISTED, SYNCED, model_pod_events
from tests.support.spec_strategies import draw_specs
from tests.support.wait import wait_for

from mistral_operator.api import names
from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.invalid_spec import INVALID

SPECS = int(os.environ.get("FUZZ_SPECS", "25"))
SEED = int(os.environ.get("FUZZ_SEED", str(random.SystemRandom().randrange(10**6))))
BYSTANDER = "bystander"
FUZZED = "fuzzed"


def manifest(name: str, spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


def ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


@dataclass
class PodGuard:
    """Watches one model's pods (a real watch) and notes every change to what ran at the start:
    a pod deleted or being deleted, a new pod, a label changed, a pod no longer Ready."""

    cluster: Cluster
    namespace: str
    model: str
    baseline: dict[str, dict[str, Any]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    events: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _started: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        for kind, pod in model_pod_events(self.cluster, self.namespace, self.model, self._stop):
            if kind == SYNCED:
                self._started.set()
                continue
            if kind == LISTED:
                self.baseline[pod["metadata"]["uid"]] = pod
            else:
                self.events += 1
            self._check(kind, pod)

    def _check(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        where = f"{kind} {meta['name']} (uid {meta['uid']})"
        before = self.baseline.get(meta["uid"])
        if before is None:
            self.violations.append(f"{where}: a pod that was not there at the start")
            return
        if kind == "DELETED" or meta.get("deletionTimestamp"):
            self.violations.append(f"{where}: deleted")
        if meta.get("labels") != before["metadata"].get("labels"):
            self.violations.append(f"{where}: labels {meta.get('labels')}")
        if not ready(pod) or (pod.get("status") or {}).get("phase") != "Running":
            self.violations.append(f"{where}: no longer Running and Ready")

    @contextmanager
    def watching(self) -> Iterator[PodGuard]:
        thread = threading.Thread(target=self.run, name="pod-guard", daemon=True)
        thread.start()
        self._started.wait(timeout=30)
        assert self._started.is_set(), "the pod watch did not start"
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=10)


def get_model(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return dict(cluster.get_json("mm", name, "-n", ns))


def carry_immutable(spec: Any, live: dict[str, Any]) -> Any:
    """``spec`` with the live object's model.profile and cache.hostPath (set once, kept),
    where ``spec`` has those sections as objects: an edit, as a person would make it."""
    spec = copy.deepcopy(spec)
    if not isinstance(spec, dict):
        return spec
    for section, key in (("model", "profile"), ("cache", "hostPath")):
        value = (live.get(section) or {}).get(key)
        part = spec.setdefault(section, {})
        if value is not None and isinstance(part, dict):
            part[key] = value
    return spec


def answered(cluster: Cluster, ns: str, name: str) -> str | None:
    """What the operator reported on the model's current generation: InvalidSpec or planned."""
    body = get_model(cluster, ns, name)
    status = body.get("status") or {}
    if status.get("observedGeneration") != body["metadata"]["generation"]:
        return None
    degraded = condition(body, "Degraded")
    return "InvalidSpec" if degraded and degraded["reason"] == INVALID else "planned"


def bystander_pods(cluster: Cluster, ns: str) -> dict[str, dict[str, Any]]:
    items = cluster.get_json("pods", "-n", ns, "-l", f"{L.MODEL}={BYSTANDER}")["items"]
    return {p["metadata"]["uid"]: p for p in items}


def reconcile_errors(operator: RunningOperator) -> float:
    """Reconciles that ended in an exception, as the operator's metrics count them."""
    found = re.search(r'^mistral_operator_reconciles_total\{result="error"\} (\S+)$',
                      operator.metrics(), re.MULTILINE)  # fmt: skip
    return float(found.group(1)) if found else 0.0


def fuzzed_pods(cluster: Cluster, ns: str) -> set[str]:
    """Pods of the fuzzed models (every model but the bystander)."""
    selector = f"{L.MODEL},{L.MODEL}!={BYSTANDER}"
    items = cluster.get_json("pods", "-n", ns, "-l", selector)["items"]
    return {p["metadata"]["name"] for p in items}


def test_fuzzed_specs_never_crash_the_operator_nor_touch_a_bystander(
    cluster: Cluster, model_namespace: str, operator: RunningOperator
) -> None:
    ns = model_namespace
    started = time.monotonic()
    log_start = operator.log_size()
    errors_before = reconcile_errors(operator)
    print(f"FUZZ_SEED={SEED} FUZZ_SPECS={SPECS}")
    specs = draw_specs(SPECS, SEED)

    bystander = quickstart(1)
    bystander["metadata"]["name"] = BYSTANDER
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(bystander))
    result = cluster.kubectl(
        "wait", "-n", ns, "--for=condition=Ready", f"mm/{BYSTANDER}", "--timeout=90s",
        check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    wait_for(
        lambda: [p for p in bystander_pods(cluster, ns).values() if ready(p)],
        timeout=30,
        what="the bystander's pod Ready",
    )
    baseline = bystander_pods(cluster, ns)
    # The model edited below starts as a valid one (its fills and pods run beside the
    # bystander's), so that edits roll real groups.
    start = quickstart(1)
    start["metadata"]["name"] = FUZZED
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(start))
    wait_for(lambda: answered(cluster, ns, FUZZED), timeout=30, what="the first reconcile")

    tally: Counter[str] = Counter()
    created: set[str] = set()
    refusals: Counter[str] = Counter()
    with PodGuard(cluster, ns, BYSTANDER).watching() as guard:
        for n, drawn in enumerate(specs):
            if n % 2 == 0:
                name = FUZZED
                spec = carry_immutable(drawn, get_model(cluster, ns, FUZZED)["spec"])
            else:
                name, spec = f"{FUZZED}-{n}", drawn
            sent = json.dumps(manifest(name, spec))
            applied = cluster.kubectl("apply", "-n", ns, "-f", "-", input=sent, check=False)
            tally["tried"] += 1
            if applied.returncode != 0:
                tally["refused by the API server"] += 1
                refusals[_reason(applied.stderr)] += 1
            else:
                outcome = wait_for(
                    lambda name=name: answered(cluster, ns, name),  # type: ignore[misc]
                    timeout=30,
                    what=f"the operator's answer to spec #{n}: {sent}",
                )
                tally["accepted, planned" if outcome == "planned" else "accepted, InvalidSpec"] += 1
                created |= fuzzed_pods(cluster, ns)
                if name != FUZZED:
                    cluster.kubectl("delete", "mm", name, "-n", ns, "--wait=false")
            assert operator.process.poll() is None, f"the operator exited after spec #{n}: {sent}"
            assert not guard.violations, f"after spec #{n} ({sent}): {guard.violations}"
            now = bystander_pods(cluster, ns)
            assert now.keys() == baseline.keys(), f"the bystander's pods changed after #{n}"
            assert all(ready(p) for p in now.values()), f"a bystander pod unready after #{n}"
        # A last look, after the operator has had time to act on the last spec.
        time.sleep(2)
        assert not guard.violations, guard.violations
    assert bystander_pods(cluster, ns).keys() == baseline.keys()
    by = get_model(cluster, ns, BYSTANDER)
    assert (condition(by, "Ready") or {}).get("status") == "True", by.get("status")
    assert operator.process.poll() is None, "the operator exited"
    assert reconcile_errors(operator) == errors_before, "reconciles ended in an exception"
    operator.assert_clean(log_start)
    print(
        f"{tally['tried']} specs tried in {time.monotonic() - started:.0f}s: "
        f"{tally['refused by the API server']} refused by the API server, "
        f"{tally['accepted, planned']} accepted and planned, "
        f"{tally['accepted, InvalidSpec']} accepted but reported {INVALID}; "
        f"{len(created)} pods of fuzzed models seen, {guard.events} bystander pod events"
    )
    for reason, count in refusals.most_common():
        print(f"  refused x{count}: {reason}")


def _reason(stderr: str) -> str:
    """The gist of a refusal: the unknown fields, or what follows the object's name."""
    text = " ".join(stderr.split())
    if "unknown field" in text:
        return "unknown field (strict field validation)"
    text = re.sub(r'"(?:[^"\\]|\\.){60,}"', '"..."', text)
    return text.split(" is invalid: ", 1)[-1][:200]

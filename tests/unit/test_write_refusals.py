"""A write the API server refuses (422, 403) becomes a Degraded condition, one event and a
retry with backoff, not a reconcile that fails every few seconds without a word."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, cast

import kopf
import pytest
from kubernetes.client.exceptions import ApiException

from mistral_operator.core import conditions as C  # noqa: N812
from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.reconcile import Observed, Plan, plan_reconcile
from mistral_operator.core.snapshot import Deletion
from mistral_operator.core.write_refusals import (
    WRITE_REFUSED,
    Refusal,
    due,
    refusal_text,
    remember,
    report_refusals,
    retry_after,
)
from mistral_operator.shell.kubeapi import KubeApi, is_refusal, server_reason
from mistral_operator.shell.reconciler import Reconciler
from tests.unit.reconcile_fixtures import NOW, example, jobs_of, observed

POLICY = (
    "ValidatingAdmissionPolicy 'no-fills' with binding 'no-fills' denied request: "
    "fills are not allowed here"
)


def job_refusal(name: str = "m-fill-1", message: str = POLICY) -> Refusal:
    return Refusal("apply", "Job", name, 422, "Invalid", message)


def status_with(*conditions: dict[str, Any], phase: str = "Starting") -> dict[str, Any]:
    return {"phase": phase, "conditions": list(conditions)}


def condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "observedGeneration": 1,
        "lastTransitionTime": "2026-06-01T11:00:00Z",
        "reason": reason,
        "message": message,
    }


def found(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


# The pure decision (core/write_refusals.py).


def test_the_backoff_doubles_from_five_seconds_up_to_its_cap() -> None:
    waits = [retry_after(n).total_seconds() for n in range(1, 9)]
    assert waits == [5, 10, 20, 40, 80, 160, 160, 160]
    assert retry_after(10_000) == timedelta(seconds=160), "no overflow for a refusal kept for days"


def test_each_refusal_at_one_generation_waits_longer_and_a_new_spec_starts_again() -> None:
    first = remember(None, job_refusal(), generation=3, now=NOW)
    assert (first.attempts, first.retry_at) == (1, NOW + timedelta(seconds=5))
    second = remember(first, job_refusal(), generation=3, now=first.retry_at)
    assert (second.attempts, second.retry_at) == (2, first.retry_at + timedelta(seconds=10))
    edited = remember(second, job_refusal(), generation=4, now=NOW)
    assert edited.attempts == 1


def test_a_refused_write_waits_out_its_backoff_unless_the_spec_changed() -> None:
    entry = remember(None, job_refusal(), generation=3, now=NOW)
    assert due(None, 3, NOW), "never refused: write"
    assert not due(entry, 3, NOW + timedelta(seconds=4))
    assert due(entry, 3, NOW + timedelta(seconds=5))
    assert due(entry, 4, NOW + timedelta(seconds=1)), "a new generation may render another object"


def test_the_text_names_each_object_and_the_api_servers_answer_in_one_line() -> None:
    text = refusal_text(
        [
            job_refusal("m-fill-a"),
            job_refusal("m-fill-b"),
            Refusal("apply", "Service", "m", 403, "Forbidden", 'exceeded quota: q,\n"services=0"'),
        ]
    )
    assert text == (
        f"the API server refused to apply Job/m-fill-a, Job/m-fill-b: HTTP 422 Invalid: {POLICY}; "
        "the API server refused to apply Service/m: HTTP 403 Forbidden: "
        'exceeded quota: q, "services=0"'
    )
    assert "\n" not in text


def test_a_long_answer_is_cut_and_many_objects_are_counted() -> None:
    many = [job_refusal(f"m-fill-{i}", "x" * 5000) for i in range(7)]
    text = refusal_text(many)
    assert "Job/m-fill-0, Job/m-fill-1, Job/m-fill-2, Job/m-fill-3 and 3 more:" in text
    assert text.endswith("...")
    assert len(text) < 600


def test_a_refusal_turns_degraded_true_with_its_text_and_posts_one_event() -> None:
    ready = condition(C.READY, "False", "GroupsNotReady")
    fine = condition(C.DEGRADED, "False", "AsExpected")
    base = status_with(ready, fine)
    status, events = report_refusals(base, base, [job_refusal()], generation=2, now=NOW)
    degraded = found(status, C.DEGRADED)
    assert degraded["status"] == "True"
    assert degraded["reason"] == WRITE_REFUSED
    assert (
        degraded["message"]
        == f"the API server refused to apply Job/m-fill-1: HTTP 422 Invalid: {POLICY}"
    )
    assert degraded["observedGeneration"] == 2
    assert degraded["lastTransitionTime"] == "2026-06-01T12:00:00Z", "it flipped now"
    assert [c["type"] for c in status["conditions"]] == [C.READY, C.DEGRADED], "order kept"
    assert found(status, C.READY) == ready, "the other conditions are the plan's"
    assert status["phase"] == "Degraded", "Starting would hide that nothing is being done"
    assert [(e.type, e.reason, e.message) for e in events] == [
        ("Warning", WRITE_REFUSED, degraded["message"])
    ]


def test_the_same_refusal_again_posts_no_event_and_keeps_its_transition_time() -> None:
    first, _ = report_refusals(status_with(), {}, [job_refusal()], generation=1, now=NOW)
    later = NOW + timedelta(seconds=40)
    # The next plan decided Degraded=False (it knows nothing of refusals): the stored
    # condition, not the plan's, is what the report compares with.
    plan = status_with(condition(C.DEGRADED, "False", "AsExpected"))
    again, events = report_refusals(plan, first, [job_refusal()], generation=1, now=later)
    assert events == []
    assert found(again, C.DEGRADED) == found(first, C.DEGRADED)
    other, events = report_refusals(
        plan, first, [job_refusal(message="another rule")], generation=1, now=later
    )
    assert [e.message for e in events] == [found(other, C.DEGRADED)["message"]]
    assert (
        found(other, C.DEGRADED)["lastTransitionTime"]
        == found(first, C.DEGRADED)["lastTransitionTime"]
    ), "still Degraded: no new transition"


def test_a_refusal_outranks_another_degraded_reason_while_it_lasts() -> None:
    failed = condition(C.DEGRADED, "True", "GroupFailed", "group g0 failed")
    status, events = report_refusals(
        status_with(failed, phase="Ready"), status_with(failed), [job_refusal()], 1, NOW
    )
    assert found(status, C.DEGRADED)["reason"] == WRITE_REFUSED
    assert found(status, C.DEGRADED)["lastTransitionTime"] == failed["lastTransitionTime"]
    assert status["phase"] == "Ready", "groups that serve still serve"
    assert len(events) == 1


def test_no_refusal_changes_nothing() -> None:
    base = status_with(condition(C.DEGRADED, "False", "AsExpected"))
    assert report_refusals(base, base, [], 1, NOW) == (base, [])


def test_once_the_write_goes_through_the_plan_clears_the_condition() -> None:
    """plan_reconcile does not know of refusals: the stored WriteRefused is replaced."""
    spec = copy.deepcopy(example("quickstart-h200.yaml")["spec"])
    refused, _ = report_refusals(
        plan_reconcile(observed(spec, warm=False)).status, {}, [job_refusal()], 1, NOW
    )
    plan = plan_reconcile(observed(spec, warm=False, status=refused, now=NOW))
    degraded = next(c for c in plan.status["conditions"] if c["type"] == C.DEGRADED)
    assert (degraded["status"], degraded["reason"]) == ("False", "AsExpected")
    assert plan.write_status


@pytest.mark.parametrize(("code", "refused"), [(400, True), (403, True), (413, True), (422, True)])
def test_answers_about_the_object_are_refusals(code: int, refused: bool) -> None:
    assert is_refusal(ApiException(status=code)) is refused


@pytest.mark.parametrize("code", [401, 404, 409, 429, 500, 503, 0])
def test_other_answers_are_not(code: int) -> None:
    assert not is_refusal(ApiException(status=code))
    assert not is_refusal(ValueError("a bug"))


def test_the_status_reason_is_preferred_to_the_http_phrase() -> None:
    exc = api_error(422, "Invalid", "nope")
    assert server_reason(exc) == "Invalid"
    assert server_reason(ApiException(status=422, reason="Unprocessable Entity")) == (
        "Unprocessable Entity"
    )


# The shell (shell/reconciler.py), with a fake API server.


def api_error(code: int, reason: str, message: str) -> ApiException:
    phrase = {403: "Forbidden", 422: "Unprocessable Entity"}.get(code, "Error")
    exc = ApiException(status=code, reason=phrase)
    exc.body = json.dumps({"kind": "Status", "reason": reason, "message": message})
    return exc


@dataclass
class FakeApi:
    """Records writes; ``refuse`` says which (verb, kind) the API server refuses, and how."""

    refuse: dict[tuple[str, str], ApiException] = field(default_factory=dict)
    writes: list[tuple[str, str, str]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)

    def _write(self, verb: str, kind: str, name: str) -> None:
        exc = self.refuse.get((verb, kind))
        if exc is not None:
            raise exc
        self.writes.append((verb, kind, name))

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._write("apply", obj["kind"], obj["metadata"]["name"])
        return obj

    def apply_status(self, *args: Any) -> None:
        self.statuses.append(copy.deepcopy(dict(args[-1])))

    def patch_labels(self, _v: str, kind: str, _ns: str | None, name: str, _l: Any) -> None:
        self._write("label", kind, name)

    def patch_annotations(self, _v: str, kind: str, _ns: str | None, name: str, _a: Any) -> None:
        self._write("annotate", kind, name)

    def delete(self, _v: str, kind: str, _ns: str | None, name: str, **_: Any) -> bool:
        self._write("delete", kind, name)
        return True


@pytest.fixture
def posted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """Events the shell posts (kopf.event needs a running operator)."""
    events: list[tuple[str, str, str]] = []

    def record(_body: Any, *, type: str, reason: str, message: str) -> None:
        events.append((type, reason, message))

    monkeypatch.setattr(kopf, "event", record)
    return events


def body_of(obs: Observed) -> dict[str, Any]:
    meta = {"name": obs.model.name, "namespace": obs.model.namespace, "uid": obs.model.uid}
    return {"apiVersion": "mistral.ai/v1alpha1", "kind": "MistralModel", "metadata": meta}


def run(reconciler: Reconciler, obs: Observed) -> Plan:
    plan = plan_reconcile(obs)
    reconciler.execute(body_of(obs), obs, plan)
    return plan


def fresh(**kwargs: Any) -> Callable[..., Observed]:
    """Snapshots of a new quick-start model: no weights anywhere, so a fill Job is planned."""
    spec = copy.deepcopy(example("quickstart-h200.yaml")["spec"])
    return lambda **more: observed(spec, warm=False, **(kwargs | more))


def test_a_refused_fill_job_is_reported_and_the_other_writes_go_on(
    posted: list[tuple[str, str, str]],
) -> None:
    api = FakeApi(refuse={("apply", "Job"): api_error(422, "Invalid", POLICY)})
    reconciler = Reconciler(cast(KubeApi, api), node_grace=timedelta(seconds=40))
    snap = fresh()
    plan = run(reconciler, snap())
    (job,) = [j["metadata"]["name"] for j in jobs_of(plan)]
    assert ("label", "Node", "h200-0") in api.writes, "the cache mark before it"
    assert {
        ("apply", "Service", "mistral-small-4"),
        ("apply", "Service", "mistral-small-4-ranks"),
    } <= set(api.writes)
    assert any(kind == "ControllerRevision" for _, kind, _ in api.writes)
    (status,) = api.statuses
    degraded = found(status, C.DEGRADED)
    assert degraded["reason"] == WRITE_REFUSED
    assert (
        degraded["message"]
        == f"the API server refused to apply Job/{job}: HTTP 422 Invalid: {POLICY}"
    )
    assert found(status, C.CACHE_READY)["reason"] == "Filling", "the plan's own status, otherwise"
    assert posted == [("Warning", WRITE_REFUSED, degraded["message"])]
    assert plan.wake_at == NOW + timedelta(seconds=5), "tried again after the first backoff"

    # Woken sooner by something else: the Job waits out its backoff, nothing new is said.
    api.writes.clear()
    plan = run(reconciler, snap(status=status, now=NOW + timedelta(seconds=2)))
    assert not any(kind == "Job" for _, kind, _ in api.writes)
    assert api.statuses == [status], "the same status: not written again"
    assert len(posted) == 1
    assert plan.wake_at == NOW + timedelta(seconds=5)

    # Refused again when due: the next wait is longer.
    plan = run(reconciler, snap(status=status, now=NOW + timedelta(seconds=5)))
    assert plan.wake_at == NOW + timedelta(seconds=15)
    assert len(posted) == 1

    # The policy is gone: the Job is written and the plan's Degraded=False is stored.
    api.refuse.clear()
    accepted = snap(status=status, now=NOW + timedelta(seconds=15))
    plan = run(reconciler, accepted)
    assert ("apply", "Job", job) in api.writes
    assert found(api.statuses[-1], C.DEGRADED)["reason"] == "AsExpected"
    assert reconciler.refused == {}
    assert plan.wake_at == plan_reconcile(accepted).wake_at, "no retry left to wake for"


def test_a_refused_cache_mark_stops_the_writes_after_it_and_keeps_the_stored_status(
    posted: list[tuple[str, str, str]],
) -> None:
    """The fill Job must not run on a node whose label does not say a fill is coming."""
    refused = api_error(403, "Forbidden", 'nodes "h200-0" is forbidden: no')
    api = FakeApi(refuse={("label", "Node"): refused})
    reconciler = Reconciler(cast(KubeApi, api), node_grace=timedelta(seconds=40))
    stored = status_with(condition(C.READY, "False", "GroupsNotReady"), phase="Starting")
    run(reconciler, fresh()(status=stored))
    assert api.writes == [], "no Job, Service or revision after the refused mark"
    (status,) = api.statuses
    assert status["phase"] == "Degraded"
    assert "topology" not in status, "the stored status, not the plan's"
    assert "cache" not in status
    assert [c["type"] for c in status["conditions"]] == [C.READY, C.DEGRADED]
    message = found(status, C.DEGRADED)["message"]
    assert message == (
        'the API server refused to label Node/h200-0: HTTP 403 Forbidden: nodes "h200-0" is '
        "forbidden: no"
    )
    assert posted == [("Warning", WRITE_REFUSED, message)], "the plan's own events wait"


def test_a_refused_unroute_stops_the_deletions(posted: list[tuple[str, str, str]]) -> None:
    """A leader still routed must not be deleted under its clients."""
    api = FakeApi(refuse={("label", "Pod"): api_error(422, "Invalid", "labels are frozen")})
    reconciler = Reconciler(cast(KubeApi, api), node_grace=timedelta(seconds=40))
    obs = fresh()()
    plan = Plan(
        label=[("m-g0-0", {L.SERVING: None})],
        delete=[Deletion("Pod", "m-g0-0", "uid-1", "drained")],
        apply=[{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "m"}}],
        status=dict(obs.status),
    )
    reconciler.execute(body_of(obs), obs, plan)
    assert api.writes == []
    assert len(posted) == 1
    assert found(api.statuses[0], C.DEGRADED)["message"].startswith(
        "the API server refused to label Pod/m-g0-0: HTTP 422 Invalid"
    )


@pytest.mark.parametrize("code", [401, 404, 500])
def test_other_errors_still_fail_the_reconcile(code: int) -> None:
    api = FakeApi(refuse={("apply", "Job"): api_error(code, "Other", "not about the object")})
    reconciler = Reconciler(cast(KubeApi, api), node_grace=timedelta(seconds=40))
    with pytest.raises(ApiException):
        run(reconciler, fresh()())
    assert api.statuses == []


def test_a_refusal_of_an_object_no_longer_planned_or_of_a_deleted_model_is_forgotten(
    posted: list[tuple[str, str, str]],
) -> None:
    api = FakeApi(refuse={("apply", "Job"): api_error(422, "Invalid", POLICY)})
    reconciler = Reconciler(cast(KubeApi, api), node_grace=timedelta(seconds=40))
    obs = fresh()()
    run(reconciler, obs)
    assert len(reconciler.refused) == 1
    reconciler.execute(body_of(obs), obs, Plan(status=dict(obs.status)))
    assert reconciler.refused == {}, "a new spec renders another Job: its own backoff"
    run(reconciler, obs)
    reconciler.forget(obs.model.uid)
    assert reconciler.refused == {}


def test_a_write_that_goes_through_does_not_reset_the_backoff_of_another_on_the_same_object(
    posted: list[tuple[str, str, str]],
) -> None:
    """A node's contents annotation is accepted, its label refused: the label's wait grows."""
    api = FakeApi(refuse={("label", "Node"): api_error(422, "Invalid", "no such label")})
    reconciler = Reconciler(cast(KubeApi, api), node_grace=timedelta(seconds=40))
    snap = fresh()
    waits = []
    for at in (0, 5, 15):
        obs = snap(now=NOW + timedelta(seconds=at), status=(api.statuses or [{}])[-1])
        plan = Plan(
            node_annotations=[("h200-0", {"a": "1"})],
            node_labels=[("h200-0", {"b": "1"})],
            status=dict(obs.status),
        )
        reconciler.execute(body_of(obs), obs, plan)
        assert plan.wake_at is not None
        waits.append((plan.wake_at - obs.now).total_seconds())
    assert waits == [5, 10, 20]
    assert len(posted) == 1


def test_a_refused_pod_create_wakes_the_next_reconcile_at_once(
    posted: list[tuple[str, str, str]],
) -> None:
    # The status written with the creates counts the group as created; the refusal is
    # reported by the very next reconcile, not at the next resync.
    api = FakeApi(refuse={("apply", "Pod"): api_error(403, "Forbidden", "exceeded quota")})
    reconciler = Reconciler(cast(KubeApi, api), node_grace=timedelta(seconds=40))
    spec = copy.deepcopy(example("quickstart-h200.yaml")["spec"])
    plan = run(reconciler, observed(spec))
    assert not any(kind == "Pod" for _, kind, _ in api.writes)
    assert plan.wake_at == NOW
    assert [reason for _, reason, _ in posted][:1] == ["CreateFailed"]
    kept = {group: message for (_, group), message in reconciler.create_errors.items()}
    again = plan_reconcile(replace(observed(spec, status=plan.status), create_errors=kept))
    refused = [g for g in again.status["groups"] if (g.get("lastFailure") or {}).get("reason")]
    assert refused
    assert all(g["lastFailure"]["reason"] == "CreateFailed" for g in refused)
    assert "exceeded quota" in refused[0]["lastFailure"]["message"]

"""`status.rollout` and the RolledBack condition: where a rollout is and why it waits.

Also where a rollout is judged failed (past its deadline, or its groups failed
``FAILURES_TO_FAIL`` times): the failed revision is recorded, and the next reconcile,
woken at once, rolls back (``core.rollback``).
"""

from __future__ import annotations

from typing import Any

from mistral_operator.core import conditions as C  # noqa: N812 - short, read everywhere here
from mistral_operator.core.rollback import FAILURES_TO_FAIL, failed_revision, last_good_revision
from mistral_operator.core.rollout import STEP_COMPLETE
from mistral_operator.core.snapshot import Event, Tally, condition_changed
from mistral_operator.core.timestamps import format_time

ROLLED_BACK = C.ROLLED_BACK
DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
GROUPS_FAILED = "GroupsFailed"


def rollout_status(work: Tally, progress: C.ConditionSpec, update_serves: bool) -> dict[str, Any]:
    """The rollout block of the status; records a failed rollout when it fails now.

    A deadline passed while a group of the update revision serves is a rollout short of
    room, not a bad revision: it is reported (Progressing) but not rolled back.
    """
    observed, update = work.observed, work.update_revision
    prior = observed.status.get("rollout") or {}
    failures = int(prior.get("groupFailures") or 0) if prior.get("revision") == update else 0
    failures += work.new_failures
    step = work.rollout_step
    out: dict[str, Any] = {"revision": update, "groupFailures": failures}
    if step is not None:
        out["step"] = step.reason
        out["message"] = step.message
    if work.surge_blocked_since is not None:
        out["surgeBlockedSince"] = format_time(work.surge_blocked_since)
    failed = failed_revision(observed)
    good = last_good_revision(observed)
    if failed is not None and failed != update:
        failed = None  # a new spec: a new rollout, the old failure no longer applies
    if failed is None and good is not None and update != good:
        reason = None
        if progress.reason == DEADLINE_EXCEEDED and not update_serves:
            reason, message = DEADLINE_EXCEEDED, progress.message
        elif failures >= FAILURES_TO_FAIL:
            reason = GROUPS_FAILED
            message = f"groups of revision {update} failed {failures} times"
        if reason is not None:
            failed = update
            out["failureReason"] = reason
            out["failureMessage"] = message
            work.plan.events.append(Event("Warning", "RolloutFailed", _failed_words(work, message)))
            work.plan.wake(observed.now)  # the next reconcile rolls back, now
    elif failed is not None:
        out["failureReason"] = prior.get("failureReason")
        out["failureMessage"] = prior.get("failureMessage")
    if failed is not None:
        out["failedRevision"] = failed
    if work.rolled_back:
        out["step"] = ROLLED_BACK if step is None or step.reason == STEP_COMPLETE else out["step"]
    return out


def _failed_words(work: Tally, message: str) -> str:
    good = last_good_revision(work.observed)
    if not work.spec.rollout.auto_rollback:
        then = f"rollout.autoRollback is off: restore revision {good}'s spec by hand"
    else:
        then = f"rolling back to revision {good}"
    return f"rollout of revision {work.update_revision} failed: {message}; {then}"


def rolled_back_condition(work: Tally, rollout: dict[str, Any]) -> C.ConditionSpec | None:
    """RolledBack: True while the last good revision is served in place of the spec's.

    Present once a rollback happened; False again when the spec moves on.
    """
    observed = work.observed
    if work.rolled_back:
        message = (
            f"revision {work.update_revision} failed ({rollout.get('failureMessage') or ''}); "
            f"serving the last good revision {work.inp.revision}. Change the spec to roll "
            "out again"
        )
        reason = str(rollout.get("failureReason") or ROLLED_BACK)
        if condition_changed(observed, C.ROLLED_BACK, True, reason):
            work.plan.events.append(Event("Warning", ROLLED_BACK, message))
        return C.ConditionSpec(C.ROLLED_BACK, True, reason, message)
    if C.find(observed.status.get("conditions") or [], C.ROLLED_BACK) is None:
        return None
    return C.ConditionSpec(
        C.ROLLED_BACK, False, "SpecRevision", f"serving the spec's revision {work.update_revision}"
    )

"""Writes the API server refuses: what to tell the user, when to try again.

A Job, Service or ControllerRevision the operator applies, or a label, annotation or
deletion it writes, can be refused for what it is: 422 Invalid from validation or an
admission policy, 403 Forbidden from a policy, a webhook or a ResourceQuota. The same
write gets the same answer until someone changes the cluster or the spec, so failing
the whole reconcile and retrying it every few seconds tells nobody anything. Instead
the shell remembers each refused object, and this module decides, without I/O:

- the ``Degraded=True`` condition with reason ``WriteRefused``, its message naming the
  objects (kind/name) and the API server's answer in one line;
- one Warning event with the same text, only when that text changes;
- when to try the object again: a backoff that doubles per refusal, and at once after
  a spec change (a new generation may render a different object).

Pods are not handled here: a refused pod create fails its group (``CreateFailed``),
which has its own record, backoff and event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mistral_operator.core import conditions as C  # noqa: N812 - short, read everywhere here
from mistral_operator.core.reconcile import conform_status
from mistral_operator.core.snapshot import Event

WRITE_REFUSED = "WriteRefused"
FIRST_RETRY = timedelta(seconds=5)
LAST_RETRY = timedelta(seconds=160)
# The API server's message is cut at this length in the condition: a webhook's answer
# can be long, and the event that repeats it is limited to 1024 characters.
MESSAGE_CHARS = 400
# Objects named per line; the rest are counted. Fills of many nodes are often refused
# by one rule with one message.
NAMED = 4
# Phases that would hide the refusal: nothing in them says that the operator is stuck.
_WAITING_PHASES = frozenset({"Starting", "Progressing"})


@dataclass(frozen=True)
class Refusal:
    """One write the API server refused, as it answered."""

    verb: str  # what the operator tried: apply, label, annotate, delete
    kind: str
    name: str
    code: int  # the HTTP status
    reason: str  # the Status reason (Invalid, Forbidden), else the HTTP phrase
    message: str  # the API server's own words

    @property
    def answer(self) -> str:
        """The API server's answer in one line, cut to ``MESSAGE_CHARS``."""
        words = " ".join(self.message.split())
        if len(words) > MESSAGE_CHARS:
            words = words[: MESSAGE_CHARS - 3] + "..."
        return f"HTTP {self.code} {self.reason}" + (f": {words}" if words else "")


@dataclass(frozen=True)
class Refused:
    """What the shell remembers of one refused object between reconciles."""

    refusal: Refusal
    attempts: int  # refusals in a row, at this generation
    generation: int  # of the model when it was last refused
    retry_at: datetime


def retry_after(attempts: int) -> timedelta:
    """The wait before the next try: 5 s after the first refusal, doubling, at most 160 s.

    Short enough that a removed policy or a raised quota is noticed soon, long enough
    that an object refused for good costs a request every few minutes, not every 5 s.
    """
    if attempts <= 1:
        return FIRST_RETRY
    doubled: timedelta = FIRST_RETRY * 2 ** min(attempts - 1, 16)
    return min(doubled, LAST_RETRY)


def remember(prior: Refused | None, refusal: Refusal, generation: int, now: datetime) -> Refused:
    """The memory of an object after one more refusal; a new generation starts again."""
    attempts = prior.attempts + 1 if prior is not None and prior.generation == generation else 1
    return Refused(refusal, attempts, generation, now + retry_after(attempts))


def due(prior: Refused | None, generation: int, now: datetime) -> bool:
    """Whether to try a write now: never refused, its backoff is over, or the spec changed."""
    return prior is None or prior.generation != generation or now >= prior.retry_at


def refusal_text(refusals: Iterable[Refusal]) -> str:
    """All refusals in one line: objects refused with the same answer share a clause.

    ``the API server refused to apply Job/a, Job/b: HTTP 422 Invalid: ...; ...``
    """
    clauses: dict[tuple[str, str], list[str]] = {}
    for refusal in refusals:
        targets = clauses.setdefault((refusal.verb, refusal.answer), [])
        target = f"{refusal.kind}/{refusal.name}"
        if target not in targets:
            targets.append(target)
    parts = []
    for (verb, answer), targets in clauses.items():
        named = ", ".join(targets[:NAMED])
        if len(targets) > NAMED:
            named += f" and {len(targets) - NAMED} more"
        parts.append(f"the API server refused to {verb} {named}: {answer}")
    return "; ".join(parts)


def report_refusals(
    base: Mapping[str, Any],
    previous: Mapping[str, Any],
    refusals: Sequence[Refusal],
    generation: int,
    now: datetime,
) -> tuple[dict[str, Any], list[Event]]:
    """The status to write with the refusals reported, and the event to post, if any.

    ``base`` is the status the reconcile decided (or the stored one, when the refusal
    stopped the writes that status speaks of); ``previous`` is the stored status.
    ``Degraded`` becomes ``WriteRefused`` whatever else the plan decided for it: the
    refusal is what needs a person, and the other reasons each still show elsewhere
    (group records, ``Schedulable``, ``CacheReady``); they are back once the write goes
    through. ``lastTransitionTime`` moves only when ``Degraded`` flips. The status comes
    back as the CRD stores it, so that an unchanged one is seen as unchanged next time.
    """
    status = dict(base)
    if not refusals:
        return status, []
    text = refusal_text(refusals)
    prior_conditions = list(previous.get("conditions") or [])
    (degraded,) = C.render_conditions(
        [C.ConditionSpec(C.DEGRADED, True, WRITE_REFUSED, text)],
        prior_conditions,
        generation,
        now,
    )
    conditions = list(status.get("conditions") or [])
    at = next((i for i, c in enumerate(conditions) if c.get("type") == C.DEGRADED), None)
    if at is None:
        conditions.append(degraded)
    else:
        conditions[at] = degraded
    status["conditions"] = conditions
    if status.get("phase") in _WAITING_PHASES:
        status["phase"] = "Degraded"
    prior = C.find(prior_conditions, C.DEGRADED)
    unchanged = (
        prior is not None
        and prior.get("status") == "True"
        and prior.get("reason") == WRITE_REFUSED
        and prior.get("message") == text
    )
    return conform_status(status), [] if unchanged else [Event("Warning", WRITE_REFUSED, text)]

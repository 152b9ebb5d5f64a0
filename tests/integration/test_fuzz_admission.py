"""Admission parity by differential fuzzing (issue 14): every spec the API server accepts is
one the operator can run, and every spec the operator's model accepts is one the API server
accepts.

FUZZ_ADMISSION_SPECS specs (default 300; `make fuzz` runs 3000) are drawn with
tests.support.spec_strategies (from the CRD schema and mutated from the examples, half of
them specs the operator's model takes; FUZZ_SEED, printed, repeats a run) and each goes to
three judges:

1. the API server: a server-side dry run of a MistralModel with that spec (`POST` with
   `dryRun=All` and `fieldValidation=Strict`, as `kubectl create --dry-run=server` sends it)
   in a namespace the test operator watches, so that whatever admission the operator adds
   (its validating webhook) judges it too. Specs go out in parallel;
2. the operator's model: `MistralModelSpec.model_validate(spec)`;
3. the planner, on what the operator would read (the spec as the API server would store it,
   defaults filled in, where it accepts the spec): `core.admission.check_spec`, the call
   the reconciler and the webhook make.

The test fails on (a) a spec the API server accepts that the model or the planner refuses
(it would be stored, and the user would learn of the mistake only from an InvalidSpec
condition) and (b) a spec the model accepts that the API server refuses (offline checks
would pass a manifest `kubectl apply` refuses). Refusals are grouped in classes (the field,
list indices and map keys as `[*]`, and the reason with the value left out); each failing
class is shrunk to a small example (fields dropped while the class stays) for the message.
Specs both refuse, but on unrelated fields, are counted apart and do not fail the test.

The counts are printed (run with `-s`) and written to `fuzz-admission.json` in the test's
tmp directory (its path is printed). To repeat a run:
`FUZZ_SEED=<n> FUZZ_ADMISSION_SPECS=<n> pytest -s tests/integration/test_fuzz_admission.py`.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from tests.support.cluster import Cluster
from tests.support.operator import RunningOperator
from tests.support.spec_strategies import crd_schema, draw_specs

from mistral_operator.api import names
from mistral_operator.api.base import RuleViolationError
from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.core.admission import Refusal as SpecRefusal
from mistral_operator.core.admission import check_spec

SPECS = int(os.environ.get("FUZZ_ADMISSION_SPECS", "300"))
SEED = int(os.environ.get("FUZZ_SEED", str(random.SystemRandom().randrange(10**6))))
# Dry runs in flight at once: the API server answers each in a few milliseconds.
WORKERS = 16
# Dry runs spent shrinking the examples, all classes together.
SHRINK_BUDGET = 4000
REPORT = "fuzz-admission.json"

Json = Any

# Failing kinds of disagreement.
API_ONLY = "API accepts, model refuses (the stored spec too: the operator cannot run it)"
SENT_ONLY = "API accepts, model refuses the spec as sent (the stored spec passes)"
PLANNER = "API accepts, planner refuses"
MODEL_ONLY = "model and planner accept, API refuses"
FAILING = (API_ONLY, SENT_ONLY, PLANNER, MODEL_ONLY)
# Informative kinds: both sides refuse, but not for the same thing.
UNRELATED = "both refuse, on unrelated fields (not a failure)"
WORDS = "both refuse a rule on the same field, in other words (not a failure)"
# The API server stores a whole float in an integer field as the integer when no CEL rule
# reads that field for that spec, and refuses it when one does ("expected int, got
# float64"); the model always asks for the integer (api/base.py SpecModel).
FLOATS = "API accepts a whole float no rule read, model asks for the integer (not a failure)"
INFORMATIVE = (UNRELATED, WORDS, FLOATS)
# What pydantic says of a float in an integer field (the API refuses `true` and "1" too,
# so where the API accepts, the value was a whole float).
_NOT_AN_INTEGER = ("Input should be a valid integer", "Input should be 1, 2, 4 or 8")


@dataclass(frozen=True, order=True)
class Refusal:
    """One judge's objection: the field (normalised) and the reason (the value left out).
    ``rule``: a CEL rule's Python twin or the planner (the API server should say the same
    words), not a schema check (which pydantic words its own way)."""

    field: str
    reason: str
    rule: bool = False

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


@dataclass(frozen=True)
class Verdicts:
    """What the three judges said of one spec; an empty tuple is an acceptance."""

    api: tuple[Refusal, ...]
    model: tuple[Refusal, ...]  # of the spec as sent
    # Of what the operator would read, where the model takes it: the stored spec where
    # the API server accepts, else the spec as sent.
    planner: tuple[Refusal, ...]
    stored: tuple[Refusal, ...] = ()  # the model's, of the stored spec (API accepts)
    api_message: str = ""  # the API server's answer, whole, for the report

    @property
    def operator(self) -> tuple[Refusal, ...]:
        """The operator's refusals: the model's (of the spec as sent, else as stored), else
        the planner's."""
        return self.model or self.stored or self.planner

    def classes(self) -> list[tuple[str, str]]:
        """(kind, class) of every disagreement, informative ones included."""
        if not self.api:
            kind = API_ONLY if self.stored else SENT_ONLY
            if kind == SENT_ONLY and all(r.reason.endswith(_NOT_AN_INTEGER) for r in self.model):
                return [(FLOATS, str(r)) for r in self.model]
            return [
                *((kind, str(r)) for r in self.model),
                *((API_ONLY, f"{r.field}: (as stored) {r.reason}") for r in self.stored
                  if not self.model),
                *((PLANNER, str(r)) for r in self.planner),
            ]  # fmt: skip
        if not self.operator:
            return [(MODEL_ONLY, str(r)) for r in self.api]
        if not any(_related(a.field, o.field) for a in self.api for o in self.operator):
            return [(UNRELATED, f"API {min(self.api)} | operator {min(self.operator)}")]
        words = []
        for mine in (o for o in self.operator if o.rule):
            said = [_numbers_out(a.reason) for a in self.api if a.field == mine.field]
            if said and _numbers_out(mine.reason) not in said:
                words.append((WORDS, f"{mine.field}: API {said[0]!r} | operator {mine.reason!r}"))
        return words


def _related(a: str, b: str) -> bool:
    """The same field, or one inside the other."""
    short, long = sorted((a, b), key=len)
    return long == short or long.startswith((f"{short}.", f"{short}["))


# --- field paths ---------------------------------------------------------------------------


_TOKEN = re.compile(r"\[([^\]]*)\]|\.?([^.\[]+)")


def _tokens(path: str) -> list[str | int]:
    """`spec.a.b[0].c` as ['a', 'b', 0, 'c'] (the leading `spec` dropped)."""
    out: list[str | int] = []
    for bracket, dotted in _TOKEN.findall(path):
        step = bracket or dotted
        out.append(int(step) if step.isdigit() else step)
    return out[1:] if out[:1] == ["spec"] else out


def field_path(steps: Sequence[str | int], *, unknown: bool = False) -> str:
    """The schema path of ``steps`` inside `spec`: list indices and map keys as `[*]`.
    Steps the schema does not know are dropped (pydantic's union tags such as `int`), but
    in the path of an ``unknown`` field: there the first is its name, with any dots in it
    (the API server's paths join with dots)."""
    node: Any = crd_schema()
    out = "spec"
    for n, step in enumerate(steps):
        properties = node.get("properties") or {}
        if "items" in node and isinstance(step, int):
            out, node = out + "[*]", node["items"]
        elif step in properties:
            out, node = f"{out}.{step}", properties[step]
        elif not properties and isinstance(node.get("additionalProperties"), dict):
            # A map (of scalars, in this CRD): the rest is its key, dots and all.
            return out + "[*]"
        elif unknown:
            return out + "." + ".".join(str(s) for s in steps[n:])
    return out


# --- the judges ----------------------------------------------------------------------------


_VALUE = r'(?:"(?:[^"\\]|\\.)*"|-?[\d.e+]+|true|false|null)'


def _gist(message: str) -> str:
    """A reason without the value it was given: `Invalid value: "x": must be ...` (or, from
    a CEL rule, `Invalid value: must be ...`) as `must be ...`, `spec.a in body must be of
    type integer: "x"` as `must be of type integer`."""
    text = " ".join(message.split())
    text = re.sub(rf"^Invalid value: (?:{_VALUE}: )?", "", text)
    text = re.sub(rf"^(Unsupported value|Too many|Duplicate value): {_VALUE}: ", r"\1: ", text)
    text = re.sub(r"^\S+ in body ", "", text)
    # A CEL rule's message framed by its reason (`Required value: cache.pvc is required`).
    text = re.sub(r"^(?:Invalid value|Required value|Forbidden|Duplicate value): (?=.)", "", text)
    text = re.sub(rf": {_VALUE}$", "", text)
    return text.removeprefix("Value error, ")


def _numbers_out(text: str) -> str:
    return re.sub(r"\d+", "N", text)


class DryRun:
    """Server-side dry runs of MistralModels with given specs, in one namespace."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        configuration = client.Configuration()
        config.load_kube_config(str(cluster.kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = WORKERS
        self.api = client.CustomObjectsApi(client.ApiClient(configuration))
        self.namespace = namespace
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, spec: Json) -> tuple[tuple[Refusal, ...], str, Json]:
        """(refusals, the answer's message, the spec as it would be stored)."""
        with self._lock:
            self.calls += 1
            name = f"fuzz-{self.calls}"
        body = {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": name},
            "spec": spec,
        }
        try:
            stored = self.api.create_namespaced_custom_object(
                names.GROUP, names.VERSION, self.namespace, names.PLURAL, body,
                dry_run="All", field_validation="Strict", _request_timeout=30,
            )  # fmt: skip
        except ApiException as exc:
            return api_refusals(exc.status, exc.body), _message(exc.body), None
        return (), "", (stored or {}).get("spec")

    def many(self, specs: Sequence[Json]) -> list[tuple[tuple[Refusal, ...], str, Json]]:
        with ThreadPoolExecutor(WORKERS) as pool:
            return list(pool.map(self, specs))


def _message(body: str | None) -> str:
    try:
        status = json.loads(body or "")
    except ValueError:
        return body or ""
    return str(status.get("message", body)) if isinstance(status, dict) else str(body)


_UNKNOWN = re.compile(r'unknown field "([^"]*)"')
_WEBHOOK = re.compile(r'admission webhook "[^"]*" denied the request: (.*)', re.DOTALL)
_FIELD_FIRST = re.compile(r"^(spec(?:[.\[][^\s:]*)?): (.*)$", re.DOTALL)


def api_refusals(status: int, body: str | None) -> tuple[Refusal, ...]:
    """The API server's refusal as Refusals: the causes of a 422 (schema, CEL), the unknown
    fields of a strict decoding error, the field named first in a webhook's denial."""
    message = _message(body)
    causes: list[dict[str, str]] = []
    try:
        causes = (json.loads(body or "{}").get("details") or {}).get("causes") or []
    except (ValueError, AttributeError):
        causes = []
    if "strict decoding error" in message:
        unknown = _UNKNOWN.findall(message)
        return tuple(sorted({Refusal(field_path(_tokens(u), unknown=True), "unknown field")
                             for u in unknown}))  # fmt: skip
    webhook = _WEBHOOK.search(message)
    if webhook:
        denial = webhook.group(1).strip()
        named = _FIELD_FIRST.match(denial)
        if named:
            where = field_path(_tokens(named.group(1)))
            return (Refusal(where, _numbers_out(_gist(named.group(2)))),)
        return (Refusal("spec", f"webhook: {_numbers_out(_gist(denial))}"),)
    if status == 422 and causes:
        found = {
            Refusal(field_path(_tokens(c.get("field") or "spec")), _gist(c.get("message", "")))
            for c in causes
        }
        return tuple(sorted(found))
    return (Refusal("(request)", f"HTTP {status}: {_gist(message)[:160]}"),)


def model_refusals(spec: Json) -> tuple[Refusal, ...]:
    """What `MistralModelSpec.model_validate` objects to, error by error."""
    try:
        MistralModelSpec.model_validate(spec)
    except ValidationError as exc:
        found = set()
        for error in exc.errors():
            loc = list(error["loc"])
            reason = error["msg"]
            violation = (error.get("ctx") or {}).get("error")
            rule = isinstance(violation, RuleViolationError)
            if isinstance(violation, RuleViolationError):
                loc += _tokens(violation.field_path or "")
                reason = violation.message
            unknown = error["type"] == "extra_forbidden"
            found.add(Refusal(field_path(loc, unknown=unknown), _gist(reason), rule))
        return tuple(sorted(found))
    return ()


def planner_refusals(spec: Json) -> tuple[Refusal, ...]:
    """What the planner objects to in a spec the model takes: `check_spec`, the call the
    reconciler and the webhook make."""
    try:
        checked = check_spec(spec)
        if isinstance(checked, SpecRefusal):
            reason = _numbers_out(_gist(checked.reason))
            return (Refusal(field_path(_tokens(checked.field)), reason, rule=True),)
    except Exception as exc:  # noqa: BLE001 - a crash is a refusal too, the worst kind
        return (Refusal("spec", f"crash: {type(exc).__name__}: {exc}", rule=True),)
    return ()


def judge(specs: Sequence[Json], dry_run: DryRun) -> list[Verdicts]:
    """The three judges' verdicts on each of ``specs``."""
    out = []
    for spec, (api, message, stored) in zip(specs, dry_run.many(specs), strict=True):
        model = model_refusals(spec)
        stored_model = model_refusals(stored) if not api else ()
        read = stored if not api else spec
        planner: tuple[Refusal, ...] = ()
        if not (stored_model if not api else model):
            planner = planner_refusals(read)
        out.append(Verdicts(api, model, planner, stored_model, message))
    return out


# --- shrinking and the report --------------------------------------------------------------


def _size(spec: Json) -> int:
    return len(json.dumps(spec, sort_keys=True))


def _without_one(spec: Json) -> Iterator[Json]:
    """``spec`` with one field or list item (at any depth) left out."""
    if isinstance(spec, dict):
        for key in spec:
            yield {k: v for k, v in spec.items() if k != key}
            for smaller in _without_one(spec[key]):
                yield {**spec, key: smaller}
    elif isinstance(spec, list):
        for i in range(len(spec)):
            yield spec[:i] + spec[i + 1 :]
            for smaller in _without_one(spec[i]):
                yield [*spec[:i], smaller, *spec[i + 1 :]]


@dataclass
class Shrinker:
    """Drops fields from an example while its class of disagreement stays."""

    judge: Callable[[Sequence[Json]], list[Verdicts]]
    budget: int = SHRINK_BUDGET

    def __call__(self, spec: Json, kind: str, klass: str) -> Json:
        current = spec
        while self.budget > 0:
            candidates = sorted(_without_one(current), key=_size)[: self.budget]
            if not candidates:
                break
            self.budget -= len(candidates)
            kept = [
                c
                for c, v in zip(candidates, self.judge(candidates), strict=True)
                if (kind, klass) in v.classes()
            ]
            if not kept:
                break
            current = kept[0]
        return current


@dataclass
class Tally:
    """Counts of the judges' verdicts, and the disagreements by class."""

    counts: Counter[str] = field(default_factory=Counter)
    classes: dict[tuple[str, str], list[tuple[Json, Verdicts]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def add(self, spec: Json, verdicts: Verdicts) -> None:
        c = self.counts
        c["tried"] += 1
        c["API accepted" if not verdicts.api else "API refused"] += 1
        c["model accepted" if not verdicts.model else "model refused"] += 1
        if verdicts.planner:
            c["planner refused (of what the model accepted)"] += 1
        classes = verdicts.classes()
        kinds = {kind for kind, _ in classes}
        if not verdicts.api and not verdicts.operator:
            c["agree: all accept and plan"] += 1
        if verdicts.api and verdicts.operator and UNRELATED not in kinds:
            c["agree: both refuse (a field in common)"] += 1
        for kind, klass in classes:
            self.classes[kind, klass].append((spec, verdicts))
        for kind in kinds:
            c[f"specs: {kind}"] += 1

    def failing(self) -> list[tuple[str, str]]:
        return sorted(k for k in self.classes if k[0] in FAILING)


COUNT_ROWS = (
    "tried",
    "API accepted",
    "API refused",
    "model accepted",
    "model refused",
    "planner refused (of what the model accepted)",
    "agree: all accept and plan",
    "agree: both refuse (a field in common)",
    *(f"specs: {kind}" for kind in (*FAILING, *INFORMATIVE)),
)


def table(tally: Tally, examples: dict[tuple[str, str], Json]) -> str:
    width = max(len(r) for r in COUNT_ROWS)
    lines = [f"  {row:<{width}} {tally.counts[row]:>6}" for row in COUNT_ROWS]
    for kind in (*FAILING, *INFORMATIVE):
        found = sorted(
            ((k, v) for k, v in tally.classes.items() if k[0] == kind), key=lambda kv: -len(kv[1])
        )
        if not found:
            continue
        lines.append(f"{kind}: {len(found)} classes")
        for (_, klass), seen in found:
            lines.append(f"  x{len(seen):<4} {klass}")
            example = examples.get((kind, klass))
            if example is not None:
                lines.append(f"         e.g. {json.dumps(example, ensure_ascii=True)}")
    return "\n".join(lines)


def report(
    path: Path, tally: Tally, examples: dict[tuple[str, str], Json], seconds: dict[str, float]
) -> None:
    classes = [
        {
            "kind": kind,
            "class": klass,
            "specs": len(seen),
            "example": examples.get((kind, klass), min((s for s, _ in seen), key=_size)),
            "api": seen[0][1].api_message,
            "model": [str(r) for r in seen[0][1].model],
            "planner": [str(r) for r in seen[0][1].planner],
        }
        for (kind, klass), seen in sorted(tally.classes.items())
    ]
    path.write_text(
        json.dumps(
            {
                "seed": SEED,
                "specs": SPECS,
                "seconds": seconds,
                "counts": {row: tally.counts[row] for row in COUNT_ROWS},
                "classes": classes,
            },
            indent=2,
        )
    )


def smallest(seen: Iterable[tuple[Json, Verdicts]]) -> Json:
    return min((spec for spec, _ in seen), key=_size)


def test_the_api_server_the_model_and_the_planner_agree_on_fuzzed_specs(
    cluster: Cluster, model_namespace: str, operator: RunningOperator, tmp_path: Path
) -> None:
    print(f"\nFUZZ_SEED={SEED} FUZZ_ADMISSION_SPECS={SPECS}")
    started = time.monotonic()
    specs = draw_specs(SPECS, SEED)
    drawn = time.monotonic()
    dry_run = DryRun(cluster, model_namespace)
    tally = Tally()
    for spec, verdicts in zip(specs, judge(specs, dry_run), strict=True):
        tally.add(spec, verdicts)
    judged = time.monotonic()

    shrink = Shrinker(lambda candidates: judge(candidates, dry_run))
    # The failing classes first: they get the shrinking budget before the informative ones.
    keys = sorted(tally.classes, key=lambda k: (k[0] not in FAILING, k))
    examples = {key: shrink(smallest(tally.classes[key]), *key) for key in keys}
    done = time.monotonic()
    seconds = {
        "draw": round(drawn - started, 2),
        "judge": round(judged - drawn, 2),
        "shrink": round(done - judged, 2),
        "total": round(done - started, 2),
    }
    summary = table(tally, examples)
    report(tmp_path / REPORT, tally, examples, seconds)
    print(
        f"{SPECS} specs in {seconds['total']:.1f}s (draw {seconds['draw']:.1f}s, judge "
        f"{seconds['judge']:.1f}s, shrink {seconds['shrink']:.1f}s, "
        f"{dry_run.calls} dry runs); report: {tmp_path / REPORT}\n{summary}"
    )
    failing = tally.failing()
    assert not failing, (
        f"{len(failing)} classes of disagreement (FUZZ_SEED={SEED} "
        f"FUZZ_ADMISSION_SPECS={SPECS} repeats the run):\n{summary}"
    )

"""Whether a spec can run: the one check both the admission webhook and the reconciler make.

`check_spec` parses the stored spec with the API models (their CEL rules' Python twins
included), plans the replica shape and resolves the weights: everything the operator
decides from the spec alone. The webhook refuses at `kubectl apply` what it refuses; the
reconciler reports the same refusal as an InvalidSpec condition for a spec stored while
no webhook ran. A refusal reads the same in both: `<field>: <reason>`.

`webhook_configuration` is the ValidatingWebhookConfiguration the operator registers
when it runs out of cluster; the chart's template renders the same rules for a Service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mistral_operator.api import names
from mistral_operator.api.base import RuleViolationError
from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.core.errors import SpecError
from mistral_operator.core.parallelism import ReplicaShape, plan_shape
from mistral_operator.core.render import Weights, resolve_weights

# The webhook's name in the configuration, and the path it is served at (Kopf routes
# `/<handler id>` to that handler).
WEBHOOK_NAME = f"spec.{names.GROUP}"
WEBHOOK_PATH = f"/{WEBHOOK_NAME}"
# Only a changed spec is checked: finalizers, annotations, labels and status writes never
# wait on the webhook, so the operator's own bookkeeping and deletions cannot be blocked.
SPEC_CHANGED = "request.operation == 'CREATE' || object.spec != oldObject.spec"


@dataclass(frozen=True)
class Refusal:
    """Why a spec cannot run: the field to fix and the reason, in one line."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason


@dataclass(frozen=True)
class Checked:
    """A spec that can run, with what planning made of it."""

    spec: MistralModelSpec
    shape: ReplicaShape
    weights: Weights


def check_spec(raw: Mapping[str, Any]) -> Checked | Refusal:
    """Parse, plan and resolve a stored spec (defaults applied, camelCase keys)."""
    try:
        spec = MistralModelSpec.model_validate(dict(raw))
    except ValidationError as exc:
        return _first_error(exc)
    try:
        shape = plan_shape(spec)
        weights = resolve_weights(spec, shape)
    except SpecError as exc:
        return Refusal(exc.field, exc.reason)
    return Checked(spec, shape, weights)


def _first_error(exc: ValidationError) -> Refusal:
    first = exc.errors()[0]
    where = "spec." + ".".join(str(p) for p in first["loc"]) if first["loc"] else "spec"
    message = first["msg"]
    violation = (first.get("ctx") or {}).get("error")
    if isinstance(violation, RuleViolationError):  # a cross-field rule: name its field
        where += violation.field_path or ""
        message = violation.message
    return Refusal(where, message)


def review_refusal(operation: str | None, spec: Any, old_spec: Any) -> Refusal | None:
    """The webhook's verdict on one admission request; None admits it.

    Only creations and updates that change the spec are checked (as SPEC_CHANGED says
    to the API server too); an object being deleted is never held back.
    """
    if operation not in ("CREATE", "UPDATE"):
        return None
    if operation == "UPDATE" and spec == old_spec:
        return None
    checked = check_spec(spec if isinstance(spec, Mapping) else {})
    return checked if isinstance(checked, Refusal) else None


def webhook_configuration(
    name: str,
    client_config: Mapping[str, Any],
    *,
    failure_policy: str,
    timeout_seconds: int,
) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration of MistralModel specs (CREATE and UPDATE)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "mistral-operator"}},
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "clientConfig": dict(client_config),
                "rules": [
                    {
                        "apiGroups": [names.GROUP],
                        "apiVersions": [names.VERSION],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [names.PLURAL],
                        "scope": "Namespaced",
                    }
                ],
                "matchConditions": [{"name": "spec-changed", "expression": SPEC_CHANGED}],
                "failurePolicy": failure_policy,
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": timeout_seconds,
            }
        ],
    }

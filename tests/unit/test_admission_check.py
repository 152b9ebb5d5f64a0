"""core/admission.py: the one spec check the webhook and the reconciler share, and the
webhook's registration; shell/webhook.py's handler and options."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from mistral_operator.cli import build_parser, webhook_options
from mistral_operator.core.admission import (
    SPEC_CHANGED,
    WEBHOOK_NAME,
    WEBHOOK_PATH,
    Checked,
    Refusal,
    check_spec,
    review_refusal,
    webhook_configuration,
)
from mistral_operator.shell.webhook import validate_spec

pytestmark = pytest.mark.unit

GOOD: dict[str, Any] = {"gpu": {"product": "H200"}}
# Valid for the schema; the planner cannot fit the model on one node's two GPUs.
UNFIT: dict[str, Any] = {
    "model": {"profile": "mistral-large-2-123b"},
    "gpu": {"product": "H100", "gpusPerNode": 2},
    "parallelism": {"shape": "Compact"},
}


def test_a_runnable_spec_is_planned() -> None:
    checked = check_spec(GOOD)
    assert isinstance(checked, Checked)
    assert checked.shape.gpus_per_node >= 1
    assert checked.weights.key


def test_a_planner_refusal_names_the_field() -> None:
    refused = check_spec(UNFIT)
    assert isinstance(refused, Refusal)
    assert refused.field == "spec.parallelism.shape"
    assert str(refused).startswith("spec.parallelism.shape: a Compact replica does not fit")


def test_a_schema_refusal_names_the_field_and_a_rule_its_own_field() -> None:
    typed = check_spec({"gpu": {"product": "H200"}, "replicas": "two"})
    assert isinstance(typed, Refusal)
    assert typed.field == "spec.replicas"
    ruled = check_spec({"gpu": {"product": "H100"}, "model": {"quantization": "nvfp4"}})
    assert isinstance(ruled, Refusal)
    assert ruled.field == "spec.model.quantization"
    assert "FP4" in ruled.reason


@pytest.mark.parametrize(
    ("operation", "spec", "old", "refused"),
    [
        ("CREATE", UNFIT, None, True),
        ("CREATE", GOOD, None, False),
        ("UPDATE", UNFIT, GOOD, True),
        # The spec did not change (metadata, finalizers): never held back.
        ("UPDATE", UNFIT, UNFIT, False),
        ("DELETE", UNFIT, UNFIT, False),
        ("CONNECT", UNFIT, None, False),
        # A body without a spec is refused, as the schema requires one.
        ("CREATE", None, None, True),
    ],
)
def test_review_checks_only_created_or_changed_specs(
    operation: str, spec: Any, old: Any, refused: bool
) -> None:
    assert (review_refusal(operation, spec, old) is not None) is refused


def test_the_handler_refuses_with_422_and_the_refusal_text() -> None:
    body = kopf.Body({"spec": UNFIT})
    with pytest.raises(kopf.AdmissionError) as caught:
        validate_spec(body=body, old=None, operation="CREATE")
    assert caught.value.code == 422
    assert str(caught.value) == str(check_spec(UNFIT))
    validate_spec(body=kopf.Body({"spec": GOOD}), old=None, operation="CREATE")
    validate_spec(body=body, old=kopf.Body({"spec": UNFIT}), operation="UPDATE")


def test_the_registration_checks_creates_and_spec_updates_of_models_only() -> None:
    config = webhook_configuration(
        "mo", {"url": "https://127.0.0.1:9443" + WEBHOOK_PATH}, failure_policy="Fail",
        timeout_seconds=5,
    )  # fmt: skip
    (hook,) = config["webhooks"]
    assert hook["name"] == WEBHOOK_NAME
    assert hook["clientConfig"]["url"].endswith(f"/{WEBHOOK_NAME}")
    (rule,) = hook["rules"]
    assert rule["operations"] == ["CREATE", "UPDATE"]
    assert rule["resources"] == ["mistralmodels"]  # not /status nor /scale
    assert hook["matchConditions"] == [{"name": "spec-changed", "expression": SPEC_CHANGED}]
    # Dry runs are checked too: the webhook has no side effects.
    assert hook["sideEffects"] == "None"


def parse(*argv: str) -> Any:
    return build_parser().parse_args(["run", *argv])


def test_webhook_options_from_the_command_line() -> None:
    assert webhook_options(parse()) is None
    local = webhook_options(parse("--webhook", "local", "--webhook-port", "19443"))
    assert local is not None
    assert local.listen == "127.0.0.1"
    assert local.hosts() == ["127.0.0.1", "localhost"]
    service = webhook_options(
        parse("--webhook", "service", "--webhook-namespace", "ops", "--webhook-service", "hook")
    )
    assert service is not None
    assert service.listen == "0.0.0.0"  # every interface of the pod
    assert service.hosts() == ["hook.ops.svc", "hook.ops", "hook.ops.svc.cluster.local"]
    assert service.failure_policy == "Fail"

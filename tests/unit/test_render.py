"""Rendered pods and Services: golden files, and SGLang's real parser accepts every command."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.reconcile import plan_reconcile
from tests.support.sglang_args import parse_sglang_command, used_deprecated_flags
from tests.unit.reconcile_fixtures import EXAMPLES, example, observed

GOLDEN = Path(__file__).parent / "golden"
TOPOLOGY_OF = {"small4-multinode-h100.yaml": "h100", "small4-b200.yaml": "b200"}


def rendered(name: str) -> list[dict[str, Any]]:
    manifest = example(name)
    manifest["spec"]["replicas"] = 1
    manifest["spec"].pop("autoscaling", None)
    plan = plan_reconcile(observed(manifest["spec"], topology=TOPOLOGY_OF.get(name, "h200")))
    return plan.apply


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_rendered_objects_match_golden_files(path: Path) -> None:
    objects = rendered(path.name)
    assert objects, "the example renders pods and Services"
    text = yaml.safe_dump_all(objects, sort_keys=True)
    golden = GOLDEN / f"{path.stem}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert golden.exists(), f"missing {golden}; run with UPDATE_GOLDEN=1 and review the diff"
    assert text == golden.read_text(), f"{golden} differs; UPDATE_GOLDEN=1 and review the diff"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_rank_command_is_accepted_by_sglangs_parser(path: Path) -> None:
    pods = [o for o in rendered(path.name) if o["kind"] == "Pod"]
    assert pods
    for pod in pods:
        container = pod["spec"]["containers"][0]
        argv = [*container["command"], *container["args"]]
        args = parse_sglang_command(argv, allow_abbrev=False)
        assert not used_deprecated_flags(argv)
        rank = int(pod["metadata"]["labels"][L.RANK])
        size = int(pod["metadata"]["labels"][L.GROUP_SIZE])
        assert args.tp_size * (args.pp_size or 1) == size * int(
            container["resources"]["limits"]["nvidia.com/gpu"]
        )
        if size > 1:
            assert args.nnodes == size
            assert args.node_rank == rank
        assert args.enable_metrics


def test_ranks_differ_only_in_node_rank() -> None:
    pods = [o for o in rendered("small4-multinode-h100.yaml") if o["kind"] == "Pod"]
    leader, worker = (p["spec"]["containers"][0]["args"] for p in pods)
    diff = [(a, b) for a, b in zip(leader, worker, strict=True) if a != b]
    assert diff == [("0", "1")]


def test_quickstart_command_has_the_designed_flags() -> None:
    pod = next(o for o in rendered("quickstart-h200.yaml") if o["kind"] == "Pod")
    args = pod["spec"]["containers"][0]["args"]
    flags = dict(zip(args[::2], args[1::2], strict=False))
    # One pod on 2 H200 GPUs, tensor-parallel, as SGLang's cookbook runs Small 4 FP8.
    assert flags["--tp-size"] == "2"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    for multi_node_only in ("--ep-size", "--attn-dp-size", "--nnodes", "--dist-init-addr"):
        assert multi_node_only not in args
    assert "--attention-backend" not in args, "flashinfer attention is for Blackwell only"
    assert "--reasoning-parser" in args
    assert args[args.index("--tool-call-parser") + 1] == "mistral"
    # The cache directory is named by its key, so the Mistral format is named explicitly.
    assert args[args.index("--model-config-parser") + 1] == "mistral"
    assert args[args.index("--context-length") + 1] == "262144"


def test_pod_shape_for_a_production_cluster() -> None:
    pod = next(o for o in rendered("quickstart-h200.yaml") if o["kind"] == "Pod")
    spec = pod["spec"]
    container = spec["containers"][0]
    assert spec["restartPolicy"] == "Never"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert {v["name"] for v in spec["volumes"]} == {"dshm", "model"}
    assert next(m for m in container["volumeMounts"] if m["name"] == "model")["readOnly"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert (
        container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"]
        >= 3600
    )
    owner = pod["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "MistralModel"
    assert owner["controller"] is True

"""The generated CRD: committed copy in sync, structural, documented, and bounded for CEL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from mistral_operator.api import names
from mistral_operator.api.crd import custom_resource_definition, openapi_schema
from mistral_operator.api.crdgen import main as crdgen_main
from mistral_operator.api.crdgen import render_crd
from mistral_operator.catalogue.profiles import GpuName, ProfileName

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMITTED = REPO_ROOT / "crds" / names.CRD_FILENAME
FORBIDDEN_KEYS = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "not", "const", "title", "nullable"}


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path, depth first."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


def version() -> dict[str, Any]:
    versions: list[dict[str, Any]] = custom_resource_definition()["spec"]["versions"]
    assert len(versions) == 1
    return versions[0]


def spec_schema() -> dict[str, Any]:
    schema: dict[str, Any] = openapi_schema()["properties"]["spec"]
    return schema


def test_committed_crd_matches_the_generator() -> None:
    assert COMMITTED.read_text() == render_crd(), (
        f"{COMMITTED.relative_to(REPO_ROOT)} is out of date: "
        "run `python -m mistral_operator.api.crdgen`"
    )


def test_crdgen_writes_and_checks(tmp_path: Path) -> None:
    assert crdgen_main(["--output-dir", str(tmp_path), "--check"]) == 1
    assert crdgen_main(["--output-dir", str(tmp_path)]) == 0
    assert (tmp_path / names.CRD_FILENAME).read_text() == render_crd()
    assert crdgen_main(["--output-dir", str(tmp_path), "--check"]) == 0


def test_rendered_yaml_round_trips() -> None:
    assert yaml.safe_load(render_crd()) == custom_resource_definition()


def test_names_and_scope() -> None:
    crd = custom_resource_definition()
    assert crd["metadata"]["name"] == "mistralmodels.serving.mistral-operator.dev"
    spec = crd["spec"]
    assert spec["group"] == "serving.mistral-operator.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "MistralModel",
        "listKind": "MistralModelList",
        "plural": "mistralmodels",
        "singular": "mistralmodel",
        "shortNames": ["mm"],
        "categories": ["mistral"],
    }
    assert version()["name"] == "v1alpha1"
    assert version()["served"] is True
    assert version()["storage"] is True


def test_status_and_scale_subresources() -> None:
    assert version()["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    status = openapi_schema()["properties"]["status"]["properties"]
    assert status["replicas"]["type"] == "integer"
    assert status["selector"]["type"] == "string"


def test_printer_columns() -> None:
    columns = {c["name"]: c for c in version()["additionalPrinterColumns"]}
    for name in ("Ready", "Desired", "Nodes/Replica", "GPU", "GPUs/Replica", "Status"):
        assert columns[name].get("priority", 0) == 0, name
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    assert columns["Status"]["jsonPath"] == ".status.phase"
    # Every column reads a declared spec or status field of its own type.
    root = openapi_schema()["properties"]
    for column in columns.values():
        path = column["jsonPath"].lstrip(".").split(".")
        if path[0] == "metadata":
            continue
        node = root[path[0]]
        for part in path[1:]:
            node = node["properties"][part]
        assert node["type"] == column["type"], column["name"]


def test_schema_is_structural() -> None:
    for path, node in walk(openapi_schema()):
        assert "type" in node or node.get("x-kubernetes-int-or-string") is True, path
        assert not FORBIDDEN_KEYS & set(node), f"{path}: {FORBIDDEN_KEYS & set(node)}"
        if "additionalProperties" in node:
            assert isinstance(node["additionalProperties"], dict), path
            assert "properties" not in node, path
        if node.get("type") == "object":
            for required in node.get("required", []):
                assert required in node.get("properties", {}), f"{path}: {required}"
        for rule in node.get("x-kubernetes-validations", []):
            assert set(rule) <= {"rule", "message", "fieldPath", "reason"}, path
            assert rule["message"], path


def test_every_field_has_a_description() -> None:
    root = openapi_schema()
    for top in ("apiVersion", "kind", "spec", "status"):
        for path, node in walk(root["properties"][top], f".{top}"):
            for name, child in node.get("properties", {}).items():
                assert child.get("description", "").strip(), f"{path}.{name} has no description"
    assert root["properties"]["spec"]["description"]


def test_spec_strings_lists_and_maps_are_bounded() -> None:
    """CEL cost is estimated from these bounds; an unbounded one can make the CRD unacceptable."""
    for path, node in walk(spec_schema(), ".spec"):
        kind = node.get("type")
        if kind == "string":
            assert "maxLength" in node or "enum" in node, f"{path}: string without maxLength"
        elif kind == "array":
            assert "maxItems" in node, f"{path}: list without maxItems"
        elif kind == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, f"{path}: map without maxProperties"
        elif node.get("x-kubernetes-int-or-string"):
            assert "maxLength" in node, f"{path}: int-or-string without maxLength"


def test_enums_come_from_the_profiles() -> None:
    spec = spec_schema()["properties"]
    assert spec["model"]["properties"]["profile"]["enum"] == list(get_args(ProfileName))
    assert spec["gpu"]["properties"]["product"]["enum"] == list(get_args(GpuName))
    assert spec["gpu"]["properties"]["gpusPerNode"]["enum"] == [1, 2, 4, 8]
    assert spec["parallelism"]["properties"]["shape"]["enum"] == ["Compact", "Node", "MultiNode"]


def test_defaults() -> None:
    spec = spec_schema()
    props = spec["properties"]
    assert spec["required"] == ["gpu"]
    assert props["replicas"]["default"] == 1
    assert props["model"]["properties"]["profile"]["default"] == "mistral-small-4-119b"
    assert props["cache"]["properties"]["mode"]["default"] == "NodeLocal"
    assert props["rollout"]["properties"]["maxSurge"]["default"] == 1
    assert props["rollout"]["properties"]["maxUnavailable"]["default"] == 0
    assert props["parallelism"]["properties"]["shape"]["default"] == "Compact"
    # Sections default to {} so that their own field defaults apply when they are left out.
    for section in ("model", "runtime", "capabilities", "parallelism", "placement", "cache"):
        assert props[section]["default"] == {}, section
    assert "default" not in props["autoscaling"]


def test_int_or_string_fields() -> None:
    rollout = spec_schema()["properties"]["rollout"]["properties"]
    for name in ("maxSurge", "maxUnavailable"):
        assert rollout[name]["x-kubernetes-int-or-string"] is True
        assert "type" not in rollout[name]


def test_cross_field_rules_are_present() -> None:
    def rules(node: dict[str, Any]) -> str:
        return " ".join(r["rule"] for r in node.get("x-kubernetes-validations", []))

    props = spec_schema()["properties"]
    assert "self.minReplicas <= self.maxReplicas" in rules(props["autoscaling"])
    assert "maxSurge" in rules(props["rollout"])
    assert "% self.attentionDataParallelSize == 0" in rules(props["parallelism"])
    assert "% self.nodesPerReplica == 0" in rules(props["parallelism"])
    assert "self.moeA2ABackend == 'none'" in rules(props["parallelism"])
    assert "self.shape == 'MultiNode'" in rules(props["parallelism"])
    assert "self.parallelism.shape != 'Compact'" in rules(spec_schema())
    assert "SharedPVC" in rules(props["cache"])
    assert "self == oldSelf" in rules(props["model"]["properties"]["profile"])
    assert "self == oldSelf" in rules(props["cache"]["properties"]["hostPath"])


def test_status_is_strict() -> None:
    for path, node in walk(openapi_schema()["properties"]["status"], ".status"):
        assert "x-kubernetes-preserve-unknown-fields" not in node, path


def test_metadata_name_is_limited() -> None:
    name = openapi_schema()["properties"]["metadata"]["properties"]["name"]
    assert name["maxLength"] == names.MAX_NAME_LENGTH

"""Regex parity on the real API server: each pattern of the CRD, RE2 against the operator.

A throwaway cluster-scoped CRD (its own group, so the MistralModel CRD is not touched)
has SLOTS string properties per (regex, kind) the MistralModel CRD uses: a `pattern` one
carries the same `pattern`, a CEL one an x-kubernetes-validations rule with the same
`self.matches(r'...')`. Objects made of the tricky strings of tests/unit/test_regex_parity.py
are created by server-side dry run, SLOTS values of every regex per request; the causes of
a 422 say which properties the API server refused, and each answer must be the operator's:
pydantic for a `pattern`, the `matches` rule's Python twin for CEL.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from tests.support.cluster import Cluster
from tests.support.regex_parity import Kind, distinct_regexes, probe_values, python_accepts
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

# A group of its own per run: a CRD deleted and made again under one name can be served
# with the old schema for a moment, and two runs must not share one.
GROUP = f"r{uuid.uuid4().hex[:8]}.regexparity.test.mistral-operator.dev"
VERSION = "v1"
PLURAL = "regexparities"
CRD_NAME = f"{PLURAL}.{GROUP}"
# Not a pattern of the CRD: the old image pattern, whose `\s` RE2 reads as ASCII and
# pydantic as Unicode. The test must see that split, or it could not see any.
CANARY: tuple[str, Kind] = (r"^[^\s]+$", "pattern")
SLOTS = 32  # values of one regex per request
MAX_LENGTH = 256  # bounds CEL's cost estimate; every probe is far shorter
REFUSED = "refused by the regex"


@dataclass(frozen=True)
class Probe:
    """One value of one regex, in the property that holds it in one request."""

    regex: str
    kind: Kind
    value: str
    prop: str


def prop_name(index: int, kind: Kind, slot: int) -> str:
    return f"{'p' if kind == 'pattern' else 'c'}{index}s{slot}"


def property_schema(regex: str, kind: Kind) -> dict[str, Any]:
    """A string property that holds `regex` as the MistralModel CRD does."""
    schema: dict[str, Any] = {"type": "string", "maxLength": MAX_LENGTH}
    if kind == "pattern":
        schema["pattern"] = regex
    else:
        schema["x-kubernetes-validations"] = [
            {"rule": f"self.matches(r'{regex}')", "message": REFUSED}
        ]
    return schema


def parity_crd(regexes: list[tuple[str, Kind]]) -> dict[str, Any]:
    properties = {
        prop_name(index, kind, slot): property_schema(regex, kind)
        for index, (regex, kind) in enumerate(regexes)
        for slot in range(SLOTS)
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {"plural": PLURAL, "singular": "regexparity", "kind": "RegexParity"},
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": {"type": "object", "properties": properties}},
                        }
                    },
                }
            ],
        },
    }


def batches(regexes: list[tuple[str, Kind]]) -> Iterator[list[Probe]]:
    """The probes of every regex, SLOTS of each per request."""
    values = [probe_values(regex) for regex, _ in regexes]
    for start in range(0, max(len(v) for v in values), SLOTS):
        yield [
            Probe(regex, kind, value, prop_name(index, kind, slot))
            for index, (regex, kind) in enumerate(regexes)
            for slot, value in enumerate(values[index][start : start + SLOTS])
        ]


def refused_properties(api: Any, batch: list[Probe]) -> set[str]:
    """The properties the API server refuses in one server-side dry-run create."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RegexParity",
        "metadata": {"name": "probe"},
        "spec": {probe.prop: probe.value for probe in batch},
    }
    try:
        api.create_cluster_custom_object(GROUP, VERSION, PLURAL, body, dry_run="All")
    except ApiException as exc:
        if exc.status != 422:
            raise AssertionError(f"not a validation refusal: {exc.status} {exc.body}") from exc
        causes = json.loads(exc.body)["details"]["causes"]
    else:
        return set()
    ours = {f"spec.{probe.prop}" for probe in batch}
    strangers = [c for c in causes if c.get("field") not in ours]
    assert strangers == [], f"causes that are no regex's: {strangers}"
    return {c["field"].removeprefix("spec.") for c in causes}


@pytest.fixture(scope="module")
def parity_api(cluster: Cluster) -> Iterator[Any]:
    """The throwaway CRD applied and served; deleted at the end."""
    crd = parity_crd([*distinct_regexes(), CANARY])
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(crd))
    try:
        wait_for(
            lambda: established(cluster),
            timeout=60,
            what=f"CRD {CRD_NAME} to be Established",
        )
        api = client.CustomObjectsApi(config.new_client_from_config(str(cluster.kubeconfig)))
        wait_for(
            lambda: api.list_cluster_custom_object(GROUP, VERSION, PLURAL) is not None,
            timeout=30,
            what=f"{PLURAL} to be served",
        )
        yield api
    finally:
        cluster.kubectl("delete", "crd", CRD_NAME, "--timeout=60s", check=False, timeout=90)


def established(cluster: Cluster) -> bool:
    conditions = cluster.get_json("crd", CRD_NAME).get("status", {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def disagreements(
    api: Any, regexes: list[tuple[str, Kind]]
) -> tuple[int, dict[tuple[str, Kind], list[str]]]:
    """How many probes were put to the API server, and per regex the values on which its
    answer is not the operator's."""
    probes = 0
    found: dict[tuple[str, Kind], list[str]] = {}
    for batch in batches(regexes):
        refused = refused_properties(api, batch)
        for probe in batch:
            probes += 1
            if (probe.prop not in refused) != python_accepts(probe.regex, probe.kind, probe.value):
                found.setdefault((probe.regex, probe.kind), []).append(probe.value)
    return probes, found


def test_api_server_and_operator_agree_on_every_regex(parity_api: Any) -> None:
    probes, found = disagreements(parity_api, [*distinct_regexes(), CANARY])
    canary = found.pop(CANARY, [])
    assert "a\u00a0" in canary, f"the harness saw no split on {CANARY}: {canary!r}"
    assert probes >= 1000, probes
    assert found == {}, {where: values[:8] for where, values in found.items()}

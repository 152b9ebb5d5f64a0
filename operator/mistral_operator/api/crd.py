"""Builds the MistralModel CustomResourceDefinition, as a dict, from the API models."""

from __future__ import annotations

from typing import Any

from mistral_operator.api import formats, names
from mistral_operator.api.schema import structural_schema
from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.api.status import MistralModelStatus

# A model's name prefixes its pods' and Services' names, which must stay DNS labels.
_METADATA = {
    "type": "object",
    "properties": {
        "name": {
            "type": "string",
            "maxLength": names.MAX_NAME_LENGTH,
            "pattern": formats.DNS1035_LABEL,
        }
    },
}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {
        "name": "Ready",
        "type": "integer",
        "jsonPath": ".status.readyReplicas",
        "description": "Replica groups that are ready and serving.",
    },
    {
        "name": "Desired",
        "type": "integer",
        "jsonPath": ".status.desiredReplicas",
        "description": "Replica groups the operator is converging to.",
    },
    {
        "name": "Queue",
        "type": "integer",
        "jsonPath": ".status.autoscaling.queue",
        "description": (
            "Requests waiting or running at the serving groups, as the autoscaler last read "
            "them (empty without autoscaling)."
        ),
    },
    {
        "name": "Nodes/Replica",
        "type": "integer",
        "jsonPath": ".status.topology.nodesPerReplica",
        "description": "Nodes (one pod each) per replica group.",
    },
    {
        "name": "GPU",
        "type": "string",
        "jsonPath": ".spec.gpu.product",
        "description": "GPU product the groups run on.",
    },
    {
        "name": "GPUs/Replica",
        "type": "integer",
        "jsonPath": ".status.topology.gpusPerReplica",
        "description": "GPUs per replica group.",
    },
    {
        "name": "Status",
        "type": "string",
        "jsonPath": ".status.phase",
        "description": "One-word summary of the model's state.",
    },
    {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    },
    {
        "name": "Profile",
        "type": "string",
        "jsonPath": ".spec.model.profile",
        "description": "Model profile served.",
        "priority": 1,
    },
    {
        "name": "Revision",
        "type": "string",
        "jsonPath": ".status.currentRevision",
        "description": "Revision all groups ran after the last completed rollout.",
        "priority": 1,
    },
    {
        "name": "Endpoint",
        "type": "string",
        "jsonPath": ".status.endpoint.url",
        "description": "OpenAI-compatible base URL.",
        "priority": 1,
    },
]


def openapi_schema() -> dict[str, Any]:
    """The root openAPIV3Schema of the MistralModel CRD."""
    spec = structural_schema(MistralModelSpec)
    status = structural_schema(MistralModelStatus)
    return {
        "type": "object",
        "description": (
            "MistralModel serves one Mistral model with SGLang on replica groups of GPU "
            "nodes, replacing whole groups on failure and on change."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": f"Versioned schema of this object: {names.API_VERSION}.",
            },
            "kind": {"type": "string", "description": f"Kind of this object: {names.KIND}."},
            # The API server allows only name/generateName restrictions under metadata.
            "metadata": _METADATA,
            "spec": spec,
            "status": status,
        },
    }


def custom_resource_definition() -> dict[str, Any]:
    """The complete CRD object, ready to serialise and apply."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": names.CRD_NAME,
            "labels": {"app.kubernetes.io/part-of": "mistral-operator"},
        },
        "spec": {
            "group": names.GROUP,
            "names": {
                "kind": names.KIND,
                "listKind": names.LIST_KIND,
                "plural": names.PLURAL,
                "singular": names.SINGULAR,
                "shortNames": list(names.SHORT_NAMES),
                "categories": list(names.CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }

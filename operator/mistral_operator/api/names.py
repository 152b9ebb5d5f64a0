"""The MistralModel API's identity: group, version, kind and the names kubectl knows it by."""

from __future__ import annotations

GROUP = "serving.mistral-operator.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "MistralModel"
LIST_KIND = "MistralModelList"
PLURAL = "mistralmodels"
SINGULAR = "mistralmodel"
SHORT_NAMES = ("mm",)
CATEGORIES = ("mistral",)
CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_FILENAME = f"{GROUP}_{PLURAL}.yaml"

# A model's name prefixes pod, Service and Job names (which must stay DNS labels
# of at most 63 characters once a group and rank suffix is added).
MAX_NAME_LENGTH = 40

"""String formats shared by the API models, written once so pydantic and the CRD agree.

Every pattern is anchored and valid both as a Python regex (checked with fullmatch) and
as RE2 (Go and CEL), so the API server and the operator accept the same strings.
"""

from __future__ import annotations

DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
ENV_VAR_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
CONFIG_KEY = r"^[-._a-zA-Z0-9]+$"
ABSOLUTE_PATH = r"^/[^\x00]*$"
# Kubernetes resource.Quantity (apimachinery's serialization format).
QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
PERCENT = r"^(100|[1-9]?[0-9])%$"
IMAGE = r"^[^\s]+$"

_HF_NAME = r"[A-Za-z0-9][-A-Za-z0-9_.]*"
_PATH = r"(/[^\s/]+)*"
MODEL_SOURCE = (
    rf"^(hf://{_HF_NAME}/{_HF_NAME}"
    rf"|s3://[a-z0-9][-a-z0-9.]{{1,61}}[a-z0-9]{_PATH}"
    rf"|pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?{_PATH}"
    rf"|https?://[^\s/]+{_PATH}/{_HF_NAME}/{_HF_NAME})$"
)
# A Hugging Face revision: a branch, a tag or a commit SHA.
REVISION = r"^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$"
SERVED_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_./:]*[A-Za-z0-9])?$"
# NCCL interface and HCA lists: `eth0`, `^lo,docker`, `=mlx5_0:1,mlx5_1:1`.
NCCL_LIST = r"^[\^=]?[-A-Za-z0-9_.:]+(,[-A-Za-z0-9_.:]+)*$"
CONDITION_TYPE = QUALIFIED_NAME
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

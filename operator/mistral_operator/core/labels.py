"""Label and annotation keys, and the names of the objects a MistralModel owns."""

from __future__ import annotations

PREFIX = "mistral-operator.dev"
MODEL = f"{PREFIX}/model"
GROUP = f"{PREFIX}/group"
RANK = f"{PREFIX}/rank"
ROLE = f"{PREFIX}/role"
REVISION = f"{PREFIX}/revision"
CACHE_KEY = f"{PREFIX}/cache-key"
SERVING = f"{PREFIX}/serving"
GROUP_SIZE = f"{PREFIX}/group-size"
SPEC_HASH = f"{PREFIX}/spec-hash"
MANAGED_BY = "app.kubernetes.io/managed-by"
# Cache-fill Jobs and their pods (which carry FILL_FOR, not MODEL: they are no group's).
COMPONENT = f"{PREFIX}/component"
CACHE_FILL = "cache-fill"
CACHE_NODE = f"{PREFIX}/cache-node"
CACHE_CLAIM = f"{PREFIX}/cache-claim"  # a SharedPVC fill: the claim it fills
FILL_FOR = f"{PREFIX}/cache-fill-for"
FILL_ATTEMPT = f"{PREFIX}/fill-attempt"
# On a node (or a SharedPVC claim): the state of one cache key's directory there
# (Pending|Filling|Ready|Failed), as a label; as an annotation of the same name, what the
# directory holds (JSON: root, source, revision, commit, bytes, readyAt); and the disk the
# caches live on.
NODE_CACHE_PREFIX = f"cache.{PREFIX}/"
NODE_CACHE_DISK = f"{NODE_CACHE_PREFIX}disk"

LEADER = "leader"
WORKER = "worker"

SGLANG_PORT = 30000
DIST_INIT_PORT = 20000


def node_cache_label(key: str) -> str:
    return f"{NODE_CACHE_PREFIX}{key}"


def group_name(index: int) -> str:
    return f"g{index}"


def group_index(name: str) -> int | None:
    """The index of a group name such as g3; None for anything else."""
    if name.startswith("g") and name[1:].isdigit():
        return int(name[1:])
    return None


def pod_name(model: str, group: str, rank: int) -> str:
    return f"{model}-{group}-{rank}"


def headless_service_name(model: str) -> str:
    return f"{model}-ranks"


def client_service_name(model: str) -> str:
    return model


def model_selector(model: str) -> dict[str, str]:
    return {MODEL: model}


def serving_leader_selector(model: str) -> dict[str, str]:
    """What the client Service selects: leaders of groups marked serving."""
    return {MODEL: model, ROLE: LEADER, SERVING: "true"}


def selector_string(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))

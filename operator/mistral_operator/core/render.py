"""Rendering: the pods and Services of a MistralModel, as plain Kubernetes objects."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from mistral_operator.api import names
from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.core import labels as L  # noqa: N812 - short, read everywhere here
from mistral_operator.core.errors import SpecError
from mistral_operator.core.parallelism import ReplicaShape
from mistral_operator.core.revision import cache_key, digest

MODEL_MOUNT = "/model"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
_PROBE_PERIOD = 10
MIN_GRACE_SECONDS = 60


@dataclass(frozen=True)
class ModelRef:
    """The MistralModel object that owns what is rendered."""

    name: str
    namespace: str
    uid: str

    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def metadata(self, name: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": {**L.model_selector(self.name), L.MANAGED_BY: "mistral-operator"}
            | (extra_labels or {}),
            "ownerReferences": [self.owner_reference()],
        }


@dataclass(frozen=True)
class Weights:
    """Where the SGLang process finds the weights."""

    source: str
    revision: str
    key: str
    model_path: str
    volume: dict[str, Any] | None
    local_copy: bool


def resolve_source(spec: MistralModelSpec, shape: ReplicaShape) -> str:
    return spec.model.source or f"hf://{shape.profile.hf_repo}"


def resolve_weights(spec: MistralModelSpec, shape: ReplicaShape) -> Weights:
    """The model path and volume for the spec's cache mode."""
    source = resolve_source(spec, shape)
    revision = spec.model.revision
    key = cache_key(source, revision)
    cache = spec.cache
    if cache.mode == "NodeLocal":
        volume = {
            "name": "model",
            "hostPath": {"path": f"{cache.host_path.rstrip('/')}/{key}", "type": "Directory"},
        }
        return Weights(source, revision, key, MODEL_MOUNT, volume, local_copy=True)
    if cache.mode == "SharedPVC":
        assert cache.pvc is not None  # the schema requires it in this mode
        volume = {
            "name": "model",
            "persistentVolumeClaim": {"claimName": cache.pvc.claim_name, "readOnly": True},
        }
        sub = (cache.pvc.sub_path or "").strip("/")
        path = f"{MODEL_MOUNT}/{sub}/{key}" if sub else f"{MODEL_MOUNT}/{key}"
        return Weights(source, revision, key, path, volume, local_copy=True)
    # cache.mode None: every pod reads the source itself.
    if source.startswith("hf://"):
        return Weights(source, revision, key, source.removeprefix("hf://"), None, local_copy=False)
    if source.startswith("pvc://"):
        claim, _, path = source.removeprefix("pvc://").partition("/")
        volume = {"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        model_path = f"{MODEL_MOUNT}/{path}".rstrip("/")
        return Weights(source, revision, key, model_path, volume, local_copy=True)
    raise SpecError(
        "spec.cache.mode",
        f"None serves only hf:// and pvc:// sources, which the pods read themselves, not "
        f"{source}: an http(s):// mirror needs cache.mode NodeLocal or SharedPVC, and s3:// "
        "sources are not read yet",
    )


@dataclass(frozen=True)
class RenderInput:
    """Everything rendering needs, decided before it starts."""

    model: ModelRef
    spec: MistralModelSpec
    shape: ReplicaShape
    revision: str
    weights: Weights

    @property
    def served_name(self) -> str:
        return self.spec.model.served_name or self.shape.profile.hf_repo.split("/")[-1]


def dist_init_address(inp: RenderInput, group: str, leader_node_ip: str | None) -> str:
    """Where rank 0 listens for the others: its stable DNS name, or its node's IP on hostNetwork."""
    if inp.spec.placement.host_network:
        if not leader_node_ip:
            raise SpecError("spec.placement.hostNetwork", "the leader node has no InternalIP")
        host = leader_node_ip
    else:
        leader = L.pod_name(inp.model.name, group, 0)
        host = f"{leader}.{L.headless_service_name(inp.model.name)}.{inp.model.namespace}.svc"
    return f"{host}:{L.DIST_INIT_PORT}"


def sglang_args(inp: RenderInput, rank: int, dist_init_addr: str | None) -> list[str]:
    """The launch_server arguments of one rank; identical on every rank except --node-rank."""
    shape, spec = inp.shape, inp.spec
    args = [
        "--model-path", inp.weights.model_path,
        "--served-model-name", inp.served_name,
        "--host", "0.0.0.0",  # noqa: S104 - the server must be reachable from the Services
        "--port", str(L.SGLANG_PORT),
        "--tp-size", str(shape.tensor_parallel),
    ]  # fmt: skip
    if shape.pipeline_parallel > 1:
        args += ["--pp-size", str(shape.pipeline_parallel)]
    if shape.profile.is_moe and shape.expert_parallel > 1:
        args += ["--ep-size", str(shape.expert_parallel)]
    if shape.attention_data_parallel > 1:
        args += ["--attn-dp-size", str(shape.attention_data_parallel)]
    if shape.moe_a2a_backend:
        args += ["--moe-a2a-backend", shape.moe_a2a_backend]
    if shape.nodes > 1:
        assert dist_init_addr is not None
        args += [
            "--nnodes", str(shape.nodes),
            "--node-rank", str(rank),
            "--dist-init-addr", dist_init_addr,
        ]  # fmt: skip
    if not inp.weights.local_copy:
        args += ["--revision", inp.weights.revision]
    elif shape.profile.mistral_native_format:
        # The cache directory is named by its key, so SGLang cannot detect the format
        # from the path as it does for a repository name.
        args += ["--model-config-parser", "mistral", "--load-format", "mistral"]
    args += list(shape.profile.architecture_args.get(shape.gpu.architecture, ()))
    args += ["--context-length", str(shape.context_length)]
    caps = spec.capabilities
    reasoning = shape.profile.reasoning if caps.reasoning is None else caps.reasoning
    tools = shape.profile.tool_calling if caps.tool_calling is None else caps.tool_calling
    if reasoning and shape.profile.reasoning_parser:
        args += ["--reasoning-parser", shape.profile.reasoning_parser]
    if tools and shape.profile.tool_call_parser:
        args += ["--tool-call-parser", shape.profile.tool_call_parser]
    if spec.model.quantization == "fp8":
        args += ["--quantization", "fp8"]
    args += ["--enable-metrics"]
    return args + list(spec.runtime.extra_args)


def _env(inp: RenderInput) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    rdma = inp.spec.placement.rdma
    if rdma is not None:
        if rdma.socket_interface:
            env += [
                {"name": "NCCL_SOCKET_IFNAME", "value": rdma.socket_interface},
                {"name": "GLOO_SOCKET_IFNAME", "value": rdma.socket_interface},
            ]
        if rdma.ib_hca:
            env.append({"name": "NCCL_IB_HCA", "value": rdma.ib_hca})
        env += [{"name": k, "value": v} for k, v in sorted(rdma.env.items())]
    if inp.weights.local_copy:
        # The weights are on a local path: never let a reader reach out to the Hub.
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    env += [
        e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in inp.spec.runtime.env
    ]
    return env


def _resources(inp: RenderInput) -> dict[str, Any]:
    limits: dict[str, Any] = {"nvidia.com/gpu": str(inp.shape.gpus_per_node)}
    requests: dict[str, Any] = {}
    rdma = inp.spec.placement.rdma
    if rdma is not None:
        limits |= {k: str(v) for k, v in sorted(rdma.resources.items())}
    res = inp.spec.runtime.resources
    if res is not None:
        if res.requests is not None:
            requests |= res.requests.model_dump(mode="json", exclude_none=True)
        if res.limits is not None:
            limits |= res.limits.model_dump(mode="json", exclude_none=True)
    out: dict[str, Any] = {"limits": limits}
    if requests:
        out["requests"] = requests
    return out


def _probe(path: str, period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _container(inp: RenderInput, rank: int, dist_init_addr: str | None) -> dict[str, Any]:
    rdma = inp.spec.placement.rdma
    capabilities: dict[str, Any] = {"drop": ["ALL"]}
    if rdma is not None and rdma.ipc_lock:
        capabilities["add"] = ["IPC_LOCK"]
    ports = [{"name": "http", "containerPort": L.SGLANG_PORT, "protocol": "TCP"}]
    if rank == 0 and inp.shape.nodes > 1:
        ports.append({"name": "dist-init", "containerPort": L.DIST_INIT_PORT, "protocol": "TCP"})
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]  # noqa: S108
    if inp.weights.volume is not None:
        mounts.append({"name": "model", "mountPath": MODEL_MOUNT, "readOnly": True})
    # Workers answer /health with a stub once up; only the leader tells if the group serves.
    readiness_path = "/ready" if rank == 0 else "/health"
    container: dict[str, Any] = {
        "name": "sglang",
        "image": inp.spec.runtime.image,
        "imagePullPolicy": inp.spec.runtime.image_pull_policy,
        "command": ["python3", "-m", "sglang.launch_server"],
        "args": sglang_args(inp, rank, dist_init_addr),
        "ports": ports,
        "resources": _resources(inp),
        "volumeMounts": mounts,
        "startupProbe": _probe(
            "/health",
            _PROBE_PERIOD,
            10,
            max(1, -(-inp.spec.runtime.startup_timeout_seconds // _PROBE_PERIOD)),
        ),
        "readinessProbe": _probe(readiness_path, _PROBE_PERIOD, 5, 3),
        # /health runs a one-token generation: give it time under load.
        "livenessProbe": _probe("/health", 30, 30, 5),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": capabilities,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    env = _env(inp)
    if env:
        container["env"] = env
    secret = inp.spec.model.credentials_secret_ref
    if secret is not None and not inp.weights.local_copy:
        container["envFrom"] = [{"secretRef": {"name": secret.name}}]
    return container


def render_pod(
    inp: RenderInput, group: str, rank: int, node: str, leader_node_ip: str | None
) -> dict[str, Any]:
    """One rank of one replica group, pinned to its node."""
    model = inp.model
    placement, rollout = inp.spec.placement, inp.spec.rollout
    dist = dist_init_address(inp, group, leader_node_ip) if inp.shape.nodes > 1 else None
    name = L.pod_name(model.name, group, rank)
    pod_labels = {
        L.GROUP: group,
        L.RANK: str(rank),
        L.ROLE: L.LEADER if rank == 0 else L.WORKER,
        L.REVISION: inp.revision,
        L.CACHE_KEY: inp.weights.key,
        L.GROUP_SIZE: str(inp.shape.nodes),
    }
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    if inp.spec.runtime.shm_size:
        volumes[0]["emptyDir"]["sizeLimit"] = inp.spec.runtime.shm_size
    if inp.weights.volume is not None:
        volumes.append(inp.weights.volume)
    tolerations = [GPU_TOLERATION] + [
        t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in placement.tolerations
    ]
    spec: dict[str, Any] = {
        "hostname": name,
        "subdomain": L.headless_service_name(model.name),
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        # SGLang exits on SIGTERM once no request is in flight, with no limit of its own:
        # whoever deletes the pod (a drain, an eviction) gives it the drain timeout.
        "terminationGracePeriodSeconds": max(MIN_GRACE_SECONDS, rollout.drain_timeout_seconds),
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [node],
                                }
                            ]
                        }
                    ]
                }
            }
        },
        "tolerations": tolerations,
        "containers": [_container(inp, rank, dist)],
        "volumes": volumes,
    }
    if placement.host_network:
        spec["hostNetwork"] = True
        spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    if placement.priority_class_name:
        spec["priorityClassName"] = placement.priority_class_name
    if inp.spec.runtime.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s.name} for s in inp.spec.runtime.image_pull_secrets]
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": model.metadata(name, pod_labels),
        "spec": spec,
    }
    pod["metadata"]["annotations"] = {L.SPEC_HASH: digest(spec)}
    return pod


def render_headless_service(inp: RenderInput) -> dict[str, Any]:
    """Gives every leader a stable DNS name, resolvable before it is ready."""
    model = inp.model
    return _with_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": model.metadata(L.headless_service_name(model.name)),
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,
                "selector": {**L.model_selector(model.name), L.ROLE: L.LEADER},
                "ports": [
                    {"name": "http", "port": L.SGLANG_PORT, "targetPort": "http"},
                    {"name": "dist-init", "port": L.DIST_INIT_PORT, "targetPort": L.DIST_INIT_PORT},
                ],
            },
        }
    )


def render_client_service(inp: RenderInput) -> dict[str, Any]:
    """The one endpoint clients use: leaders of groups marked serving."""
    model = inp.model
    return _with_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": model.metadata(L.client_service_name(model.name)),
            "spec": {
                "type": "ClusterIP",
                "selector": L.serving_leader_selector(model.name),
                "ports": [{"name": "http", "port": L.SGLANG_PORT, "targetPort": "http"}],
            },
        }
    )


def endpoint_url(model: ModelRef) -> str:
    return f"http://{L.client_service_name(model.name)}.{model.namespace}.svc:{L.SGLANG_PORT}/v1"


def _with_hash(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"]["annotations"] = {L.SPEC_HASH: digest(obj["spec"])}
    return obj


# Stand-ins for the per-group and per-node parts of a pod, so that the template digest
# depends on the spec and on how this operator renders it, never on where a group runs.
_TEMPLATE_GROUP = "g"
_TEMPLATE_NODE = "node"
_TEMPLATE_NODE_IP = "0.0.0.0"  # noqa: S104 - a placeholder, never bound


def with_template_revision(inp: RenderInput) -> RenderInput:
    """``inp`` with its revision set to a digest of the pods it renders.

    Equal for two specs exactly when they render the same pods: a change that does not
    reach a pod (replicas, rollout settings, a default spelled out) keeps the revision,
    and an operator upgrade that renders pods differently changes it.
    """
    blank = replace(inp, revision="")
    ranks = range(min(inp.shape.nodes, 2))  # rank 0 leads; every worker renders alike
    pods = [
        render_pod(blank, _TEMPLATE_GROUP, rank, _TEMPLATE_NODE, _TEMPLATE_NODE_IP)
        for rank in ranks
    ]
    return replace(inp, revision=digest(pods))

"""Builds the table of planned Compact replica shapes for every profile, GPU and precision.

`mistral-operator sizing` prints it and docs/sizing.md carries a copy between marker
comments. The rows come from the same per-GPU memory arithmetic the planner uses
(core/sizing.py): what each GPU of a replica holds in weights, the room left for the
KV cache, and how much of that room one full-context request takes on each GPU (a GQA
cache split over the attention group, an MLA cache whole on every GPU). So the table
shows what a Compact MistralModel would get, beside SGLang's cookbook where the
cookbook has a figure. Pure: no I/O; the CLI prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from mistral_operator.api.model import Quantization
from mistral_operator.catalogue.profiles import (
    BYTES_PER_PARAM,
    GPU_PROFILES,
    GPUS_PER_HGX_NODE,
    MODEL_PROFILES,
    GpuName,
    GpuProfile,
    ModelProfile,
    Precision,
    ProfileName,
)
from mistral_operator.core.sizing import (
    GPU_COUNTS,
    HEADROOM,
    KV_SHARE,
    MemoryPlan,
    compact_gpus,
    precision_of,
)

# The order `spec.model.quantization` values are listed in; nvfp4 only on FP4 GPUs.
QUANTIZATIONS: tuple[Quantization, ...] = ("auto", "fp8", "nvfp4")
# The most nodes a MultiNode replica may span (spec.parallelism.nodesPerReplica <= 64).
MAX_NODES = 64

BEGIN_MARKER = "<!-- sizing-table:begin -->"
END_MARKER = "<!-- sizing-table:end -->"

RowShape = Literal["Compact", "MultiNode"]
Attention = Literal["GQA", "MLA"]


@dataclass(frozen=True)
class SizingRow:
    """One planned replica: a profile on a GPU in one precision at one context length."""

    profile: ProfileName
    gpu: GpuName
    quantizations: tuple[str, ...]
    """The `spec.model.quantization` values served in this precision (auto and fp8 are
    one row when the checkpoint is published in FP8)."""
    precision: Precision
    context_length: int
    attention: Attention
    """GQA: a request's KV is split over its attention group's GPUs; MLA: whole on each."""
    shape: RowShape
    """Compact when a replica fits one node; MultiNode when even a whole node is too small."""
    nodes: int | None
    """Nodes one replica spans: 1 for Compact; for MultiNode the fewest whole nodes that
    give it room (None if not even MAX_NODES do)."""
    gpus: int | None
    """GPUs per replica (nodes x 8 for MultiNode)."""
    attention_dp: int
    """Attention data-parallel groups: 1 for Compact (one tensor-parallel group); for a
    MultiNode mixture-of-experts replica every GPU is its own group."""
    cookbook_gpus: int | None
    """GPUs per replica in SGLang's cookbook, where it has a figure."""
    ratio: float | None
    """Ours / cookbook; 1.0 means the planner agrees with the cookbook."""
    replicas_per_node: int | None
    """Compact replicas one 8-GPU node holds; None for MultiNode."""
    weights_gib: float
    """The whole model's weights."""
    weights_from: str
    """Where the weight size comes from: the published checkpoint or params x bytes."""
    weights_per_gpu_gib: float
    usable_per_gpu_gib: float
    """One GPU's memory less the headroom."""
    kv_room_per_gpu_gib: float
    """Usable memory per GPU less its weights: what each GPU keeps for the KV cache."""
    kv_room_share: float
    """KV room as a share of usable memory; a Compact replica keeps at least KV_SHARE."""
    kv_bytes_per_token: int
    kv_per_request_gib: float
    """KV cache of one full-context request, whole."""
    kv_per_request_per_gpu_gib: float
    """What one full-context request's KV takes on each GPU of its attention group."""
    requests_held: int
    """Full-context requests whose KV fits beside the weights, over all attention groups."""
    memory: str
    """The arithmetic in one line, as status.topology shows it."""


@dataclass(frozen=True)
class SizingTable:
    """Every row, and the constants they were planned with."""

    rows: tuple[SizingRow, ...]
    context_length: int | None
    """The context asked for (capped at each profile's maximum); None: each one's maximum."""
    headroom: float = HEADROOM
    kv_share: float = KV_SHARE
    gpu_counts: tuple[int, ...] = GPU_COUNTS
    node_gpus: int = GPUS_PER_HGX_NODE

    def to_json(self) -> dict[str, Any]:
        """A plain dict for `--format json`: tools read the rows without parsing markdown."""
        return {
            "contextLength": self.context_length,
            "headroom": self.headroom,
            "kvShare": self.kv_share,
            "gpuCounts": list(self.gpu_counts),
            "nodeGpus": self.node_gpus,
            "rows": [_camel(asdict(row)) for row in self.rows],
        }


def _camel(fields: Mapping[str, Any]) -> dict[str, Any]:
    """snake_case keys as camelCase, the spelling of the CRD and status."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        head, *rest = key.split("_")
        out[head + "".join(part.title() for part in rest)] = (
            list(value) if isinstance(value, tuple) else value
        )
    return out


def _weights_from(profile: ModelProfile, precision: Precision) -> str:
    if precision in profile.published_weight_gb:
        return f"published {profile.published_weight_gb[precision]:g} GB"
    return f"{profile.total_params_b:g}B x {BYTES_PER_PARAM[precision]:g} B"


def _served_precisions(
    profile: ModelProfile, gpu: GpuProfile
) -> list[tuple[Precision, tuple[Quantization, ...]]]:
    """Each distinct precision the quantization values give on this GPU, with those values."""
    by_precision: dict[Precision, list[Quantization]] = {}
    for quantization in QUANTIZATIONS:
        if quantization == "nvfp4" and not gpu.supports_fp4:
            continue  # the CRD refuses nvfp4 on GPUs without FP4
        if quantization == "fp8" and not gpu.supports_fp8:
            continue
        by_precision.setdefault(precision_of(quantization, profile), []).append(quantization)
    return [(precision, tuple(values)) for precision, values in by_precision.items()]


def _multi_node(
    profile: ModelProfile, gpu: GpuProfile, precision: Precision, context: int
) -> tuple[MemoryPlan, int | None]:
    """The fewest whole nodes giving the replica the room a Compact one would get, laid out
    as MultiNode lays it out (mixture-of-experts: data-parallel attention on every GPU;
    dense: one tensor x pipeline group); the MAX_NODES plan and None if none do."""
    plan: MemoryPlan | None = None
    for nodes in range(2, MAX_NODES + 1):
        gpus = nodes * GPUS_PER_HGX_NODE
        attention_dp = gpus if profile.is_moe else 1
        plan = MemoryPlan(profile, gpu, precision, context, gpus, attention_dp)
        if plan.compact_fit:
            return plan, nodes
    assert plan is not None
    return plan, None


def plan_row(
    profile: ModelProfile,
    gpu: GpuProfile,
    precision: Precision,
    quantizations: tuple[str, ...],
    context: int,
) -> SizingRow:
    """The Compact plan of one profile on one GPU, or a MultiNode row when a node is too small."""
    compact = compact_gpus(profile, gpu, precision, context)
    shape: RowShape
    nodes: int | None
    replicas: int | None
    if compact is not None:
        plan, shape, nodes = compact, "Compact", 1
        replicas = GPUS_PER_HGX_NODE // compact.gpus
    else:
        # Not failing here: the table is for choosing a shape, and "needs MultiNode"
        # is the answer for a model no 8-GPU node holds.
        plan, nodes = _multi_node(profile, gpu, precision, context)
        shape, replicas = "MultiNode", None
    cookbook = profile.cookbook_gpus.get((precision, gpu.architecture))
    # The cookbook only covers single-node tensor parallelism, so a ratio is only
    # meaningful for a Compact row.
    ratio = plan.gpus / cookbook if cookbook and shape == "Compact" else None
    return SizingRow(
        profile=profile.name,
        gpu=gpu.name,
        quantizations=quantizations,
        precision=precision,
        context_length=context,
        attention="MLA" if profile.latent_attention else "GQA",
        shape=shape,
        nodes=nodes,
        gpus=plan.gpus if nodes is not None else None,
        attention_dp=plan.attention_dp,
        cookbook_gpus=cookbook,
        ratio=ratio,
        replicas_per_node=replicas,
        weights_gib=plan.weights_gib,
        weights_from=_weights_from(profile, precision),
        weights_per_gpu_gib=plan.weights_per_gpu_gib,
        usable_per_gpu_gib=plan.usable_per_gpu_gib,
        kv_room_per_gpu_gib=plan.kv_room_per_gpu_gib,
        kv_room_share=plan.kv_room_per_gpu_gib / plan.usable_per_gpu_gib,
        kv_bytes_per_token=profile.kv_bytes_per_token,
        kv_per_request_gib=plan.kv_per_request_gib,
        kv_per_request_per_gpu_gib=plan.kv_per_request_per_gpu_gib,
        requests_held=plan.requests_held,
        memory=plan.summary(),
    )


def build_table(
    context_length: int | None = None,
    profiles: Iterable[ModelProfile] | None = None,
    gpus: Iterable[GpuProfile] | None = None,
) -> SizingTable:
    """Rows for every profile x GPU x served precision, in catalogue order.

    `context_length` is capped at each profile's maximum: the CRD refuses a longer one.
    """
    gpu_list = tuple(gpus if gpus is not None else GPU_PROFILES.values())
    rows: list[SizingRow] = []
    for profile in profiles if profiles is not None else MODEL_PROFILES.values():
        context = min(context_length or profile.max_context_length, profile.max_context_length)
        for gpu in gpu_list:
            for precision, quantizations in _served_precisions(profile, gpu):
                rows.append(plan_row(profile, gpu, precision, quantizations, context))
    return SizingTable(rows=tuple(rows), context_length=context_length)


def _or_dash(value: object) -> str:
    return "—" if value is None else str(value)


def _gpus_cell(row: SizingRow) -> str:
    if row.shape == "Compact":
        return _or_dash(row.gpus)
    if row.nodes is None:
        return f"> {MAX_NODES} nodes"
    return f"{row.gpus} ({row.nodes} nodes)"


HEADER: Sequence[str] = (
    "profile",
    "GPU",
    "quantization (precision)",
    "context",
    "attention",
    "shape",
    "GPUs / replica",
    "cookbook",
    "ours / cookbook",
    "replicas / node",
    "weights GiB (from)",
    "weights GiB / GPU",
    "usable GiB / GPU",
    "KV room GiB / GPU (share)",
    "KV GiB / request",
    "KV GiB / request / GPU",
    "full-context requests held",
)


def _cells(row: SizingRow) -> list[str]:
    return [
        row.profile,
        row.gpu,
        f"{', '.join(row.quantizations)} ({row.precision})",
        str(row.context_length),
        row.attention,
        row.shape,
        _gpus_cell(row),
        _or_dash(row.cookbook_gpus),
        "—" if row.ratio is None else str(round(row.ratio, 2)),
        _or_dash(row.replicas_per_node),
        f"{row.weights_gib:.1f} ({row.weights_from})",
        f"{row.weights_per_gpu_gib:.1f}",
        f"{row.usable_per_gpu_gib:.1f}",
        f"{row.kv_room_per_gpu_gib:.1f} ({row.kv_room_share:.0%})",
        f"{row.kv_per_request_gib:.3f}",
        f"{row.kv_per_request_per_gpu_gib:.3f}",
        str(row.requests_held),
    ]


def render_markdown(table: SizingTable) -> str:
    """A caption and the table in GitHub markdown, ending with a newline."""
    context = (
        "each profile's maximum context"
        if table.context_length is None
        else f"a context of {table.context_length} tokens (capped at each profile's maximum)"
    )
    counts = ", ".join(str(count) for count in table.gpu_counts)
    caption = (
        f"Compact replicas planned at {context} on {table.node_gpus}-GPU nodes, per GPU: "
        f"usable = GPU memory x {1 - table.headroom:g} ({table.headroom:.0%} headroom); "
        "KV room = usable - weights / GPUs; a request's KV per GPU is its KV divided by "
        "the GPUs for GQA, its whole KV for MLA; requests held = KV room / KV per request "
        f"per GPU, rounded down. Compact takes the fewest of {counts} GPUs whose KV room is "
        f"at least {table.kv_share:.0%} of usable and holds one full-context request. "
        "Memory in GiB (2^30 bytes)."
    )
    lines = [caption, "", "| " + " | ".join(HEADER) + " |"]
    lines.append("|" + "|".join("---" for _ in HEADER) + "|")
    lines.extend("| " + " | ".join(_cells(row)) + " |" for row in table.rows)
    return "\n".join(lines) + "\n"


class MissingMarkersError(ValueError):
    """A document without the sizing-table begin and end markers, in that order."""


def _block_bounds(document: str) -> tuple[int, int]:
    begin = document.find(BEGIN_MARKER)
    end = document.find(END_MARKER)
    if begin < 0 or end < begin:
        raise MissingMarkersError(f"expected {BEGIN_MARKER} ... {END_MARKER} in the document")
    return begin + len(BEGIN_MARKER), end


def extract_block(document: str) -> str:
    """The text between the markers, without the newline that follows the begin marker."""
    start, end = _block_bounds(document)
    return document[start:end].removeprefix("\n")


def replace_block(document: str, block: str) -> str:
    """The document with `block` between the markers (each marker on its own line)."""
    start, end = _block_bounds(document)
    return document[:start] + "\n" + block + document[end:]

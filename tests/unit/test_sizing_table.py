"""The sizing table: the cookbook figures, per-GPU arithmetic redone by hand, docs, CLI."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from mistral_operator.api.spec import MistralModelSpec
from mistral_operator.catalogue.profiles import (
    GPU_PROFILES,
    MODEL_PROFILES,
    GpuName,
    ModelProfile,
    Precision,
    ProfileName,
)
from mistral_operator.cli import main
from mistral_operator.core.parallelism import plan_shape
from mistral_operator.core.sizing_table import (
    BEGIN_MARKER,
    END_MARKER,
    SizingRow,
    build_table,
    extract_block,
    render_markdown,
    replace_block,
)

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
SIZING_DOC = REPO_ROOT / "docs" / "sizing.md"
SMALL_4: ProfileName = "mistral-small-4-119b"

# The figures docs/sizing.md states, written out here rather than imported so that the
# arithmetic is checked independently of core/sizing.py: a change to any of them must
# change the docs too.
HEADROOM = 0.10
KV_SHARE = 0.20
GPU_COUNTS = (1, 2, 4, 8)
NODE_GPUS = 8
BYTES_PER_PARAM = {"bf16": 2.0, "fp8": 1.0, "fp4": 0.5625}
KV_BYTES = 2  # BF16 cache
GIB = 2**30
# Multi-head latent attention: the whole cache on every GPU. Every other profile is GQA.
MLA_PROFILES: set[str] = {SMALL_4}


@dataclasses.dataclass(frozen=True)
class HandPlan:
    """One replica's memory per GPU, worked out from the catalogue's raw numbers."""

    usable: float
    weights_per_gpu: float
    room: float
    kv_per_request: float
    kv_per_request_per_gpu: float
    held: int

    @property
    def compact(self) -> bool:
        return self.held >= 1 and self.room >= KV_SHARE * self.usable


def weights_bytes(profile: ModelProfile, precision: Precision) -> float:
    if precision in profile.published_weight_gb:
        return profile.published_weight_gb[precision] * 1e9
    return profile.total_params_b * 1e9 * BYTES_PER_PARAM[precision]


def by_hand(
    profile: ModelProfile,
    gpu: GpuName,
    precision: Precision,
    context: int,
    gpus: int,
    *,
    groups: int = 1,
) -> HandPlan:
    """Bytes, not GiB, until the end; `groups` attention data-parallel groups."""
    usable = GPU_PROFILES[gpu].memory_mib * 2**20 * (1 - HEADROOM)
    weights_per_gpu = weights_bytes(profile, precision) / gpus
    room = usable - weights_per_gpu
    kv = context * profile.layers * profile.kv_values_per_token_layer * KV_BYTES
    kv_per_gpu = kv if profile.name in MLA_PROFILES else kv / (gpus // groups)
    held = groups * math.floor(room / kv_per_gpu) if room > 0 else 0
    return HandPlan(usable, weights_per_gpu, room, kv, kv_per_gpu, held)


def rows_of(profile: ProfileName, context: int | None = None) -> list[SizingRow]:
    return [row for row in build_table(context).rows if row.profile == profile]


def test_only_small_4_uses_latent_attention() -> None:
    assert {p.name for p in MODEL_PROFILES.values() if p.latent_attention} == MLA_PROFILES
    for row in build_table().rows:
        assert row.attention == ("MLA" if row.profile in MLA_PROFILES else "GQA"), row


def test_small_4_matches_the_sglang_cookbook() -> None:
    by_key = {(row.gpu, row.precision): row for row in rows_of(SMALL_4)}
    # FP8 tp=2 on Hopper, tp=1 on Blackwell; NVFP4 tp=1 (Blackwell only). The requests
    # held: (0.9 x memory - weights / GPUs) / 5.625 GiB, the whole latent on each GPU.
    expected: dict[tuple[GpuName, Precision], tuple[int, int]] = {
        ("H100", "fp8"): (2, 2),
        ("H200", "fp8"): (2, 12),
        ("B200", "fp8"): (1, 8),
        ("B200", "fp4"): (1, 18),
    }
    assert set(by_key) == set(expected)
    for key, (gpus, held) in expected.items():
        row = by_key[key]
        assert row.shape == "Compact", key
        assert row.cookbook_gpus == gpus, key
        assert row.gpus == gpus, key
        assert row.ratio == 1.0, key
        assert row.replicas_per_node == NODE_GPUS // gpus, key
        assert row.requests_held == held, key
        assert row.kv_per_request_per_gpu_gib == row.kv_per_request_gib == 5.625, key


def test_small_4_caches_the_whole_mla_latent_on_every_gpu() -> None:
    # 36 layers x (256 latent + 64 RoPE values) x 2 bytes: 22.5 KiB per token.
    h100 = rows_of(SMALL_4)[0]
    assert h100.kv_bytes_per_token == 36 * (256 + 64) * 2 == 23040
    assert h100.kv_per_request_gib == pytest.approx(262144 * 23040 / GIB) == 5.625
    # Two H100s: 71.7 - 55.4 = 16.3 GiB per GPU, 2 requests (pooled it would be 5).
    assert h100.gpus == 2
    assert h100.kv_per_request_per_gpu_gib == 5.625
    assert h100.kv_room_per_gpu_gib == pytest.approx(81559 / 1024 * 0.9 - 119e9 / GIB / 2)
    assert h100.kv_room_per_gpu_gib == pytest.approx(16.27, abs=0.01)
    assert h100.requests_held == 2


def test_kv_share_is_why_one_h200_is_not_enough_for_small_4() -> None:
    # One H200 would hold the FP8 weights with 12% of its usable memory for KV: 2 requests.
    one = by_hand(MODEL_PROFILES[SMALL_4], "H200", "fp8", 262144, 1)
    assert one.room / one.usable == pytest.approx(0.123, abs=0.001)
    assert one.held == 2
    assert not one.compact
    # The window of shares that reproduce the cookbook: above one H200's 12.3%, at most
    # two H100s' 22.7% (B200 FP8 on one GPU keeps 31.2%).
    two_h100 = by_hand(MODEL_PROFILES[SMALL_4], "H100", "fp8", 262144, 2)
    one_b200 = by_hand(MODEL_PROFILES[SMALL_4], "B200", "fp8", 262144, 1)
    assert one.room / one.usable < KV_SHARE <= two_h100.room / two_h100.usable
    assert two_h100.room / two_h100.usable == pytest.approx(0.227, abs=0.001)
    assert one_b200.room / one_b200.usable == pytest.approx(0.312, abs=0.001)


def test_gqa_kv_is_split_over_the_replica_gpus() -> None:
    # Mistral Large 2 BF16 on 4 H100s: 88 x (2 x 8 x 128) x 2 bytes x 131072 = 44 GiB a
    # request, 11 GiB on each GPU.
    row = next(
        r for r in rows_of("mistral-large-2-123b") if (r.gpu, r.precision) == ("H100", "bf16")
    )
    assert (row.attention, row.gpus) == ("GQA", 4)
    assert row.kv_per_request_gib == 44.0
    assert row.kv_per_request_per_gpu_gib == 11.0
    assert row.requests_held == math.floor(row.kv_room_per_gpu_gib / 11.0) == 1


def test_every_row_is_the_fewest_gpus_with_room_for_batching() -> None:
    rows = build_table().rows
    assert rows
    for row in rows:
        profile = MODEL_PROFILES[row.profile]
        where = f"{row.profile} on {row.gpu} in {row.precision}"
        assert row.shape == "Compact", where  # every catalogued model fits one node
        assert row.gpus in GPU_COUNTS, where
        assert row.context_length == profile.max_context_length, where
        plan = by_hand(profile, row.gpu, row.precision, row.context_length, row.gpus)
        assert plan.compact, where
        for fewer in (n for n in GPU_COUNTS if n < row.gpus):
            smaller = by_hand(profile, row.gpu, row.precision, row.context_length, fewer)
            assert not smaller.compact, f"{where}: {fewer} GPUs would do"
        assert row.attention_dp == 1, where
        assert row.weights_gib == pytest.approx(weights_bytes(profile, row.precision) / GIB)
        assert row.weights_per_gpu_gib == pytest.approx(plan.weights_per_gpu / GIB), where
        assert row.usable_per_gpu_gib == pytest.approx(plan.usable / GIB), where
        assert row.kv_room_per_gpu_gib == pytest.approx(plan.room / GIB), where
        assert row.kv_room_share == pytest.approx(plan.room / plan.usable), where
        assert row.kv_room_share >= KV_SHARE, where
        assert row.kv_per_request_gib == pytest.approx(plan.kv_per_request / GIB), where
        assert row.kv_per_request_per_gpu_gib == pytest.approx(plan.kv_per_request_per_gpu / GIB), (
            where
        )
        assert row.requests_held == plan.held >= 1, where
        assert row.replicas_per_node == NODE_GPUS // row.gpus, where
        assert f"{row.gpus} x {row.gpu}: weights {row.weights_gib:.1f} GiB" in row.memory


def test_rows_cover_every_profile_gpu_and_precision() -> None:
    table = build_table()
    seen = {(row.profile, row.gpu, row.precision) for row in table.rows}
    assert len(seen) == len(table.rows)
    expected = set()
    for profile in MODEL_PROFILES.values():
        for gpu in GPU_PROFILES.values():
            precisions = {profile.native_precision, "fp8"}
            if gpu.supports_fp4:
                precisions.add("fp4")
            expected |= {(profile.name, gpu.name, p) for p in precisions}
    assert seen == expected
    for row in table.rows:
        assert ("nvfp4" in row.quantizations) == (row.precision == "fp4")
        assert ("auto" in row.quantizations) == (
            row.precision == MODEL_PROFILES[row.profile].native_precision
        )


def test_rows_agree_with_the_operator_plan() -> None:
    """A Compact MistralModel gets the GPUs, and the memory line, its row shows."""
    for row in build_table().rows:
        quantization = "nvfp4" if row.precision == "fp4" else row.quantizations[0]
        spec = MistralModelSpec.model_validate(
            {
                "model": {"profile": row.profile, "quantization": quantization},
                "gpu": {"product": row.gpu},
            }
        )
        shape = plan_shape(spec)
        assert (shape.gpus, shape.replicas_per_node) == (row.gpus, row.replicas_per_node), row
        assert shape.memory is not None
        assert shape.memory.requests_held == row.requests_held, row
        assert shape.memory.summary() == row.memory, row


def test_a_shorter_context_is_planned_and_capped_at_each_maximum() -> None:
    table = build_table(context_length=131072)
    assert table.context_length == 131072
    for row in table.rows:
        maximum = MODEL_PROFILES[row.profile].max_context_length
        assert row.context_length == min(131072, maximum)
    # Half the context: Small 4 keeps its GPUs (the weights decide), holding twice as
    # many requests, or about: 5 on 2 H100s, 25 on 2 H200s, 17 on one B200.
    small_4 = {(r.gpu, r.precision): r for r in table.rows if r.profile == SMALL_4}
    assert {key: (r.gpus, r.ratio, r.requests_held) for key, r in small_4.items()} == {
        ("H100", "fp8"): (2, 1.0, 5),
        ("H200", "fp8"): (2, 1.0, 25),
        ("B200", "fp8"): (1, 1.0, 17),
        ("B200", "fp4"): (1, 1.0, 37),
    }


def test_a_shorter_context_shrinks_a_replica_a_full_request_did_not_fit() -> None:
    # Mistral Large 2 FP8 on H100: 2 GPUs keep 20.1% for KV, but a 131072-token request
    # takes 44 / 2 = 22 GiB of each; at 65536 tokens it takes 11 GiB and fits.
    large = MODEL_PROFILES["mistral-large-2-123b"]
    full, half = (
        next(r for r in rows_of(large.name, context) if (r.gpu, r.precision) == ("H100", "fp8"))
        for context in (None, 65536)
    )
    assert (full.gpus, full.replicas_per_node, full.requests_held) == (4, 2, 3)
    assert (half.gpus, half.replicas_per_node, half.requests_held) == (2, 4, 1)
    two = by_hand(large, "H100", "fp8", 131072, 2)
    assert two.room / two.usable >= KV_SHARE
    assert two.held == 0


def test_a_model_no_node_holds_is_a_multinode_row() -> None:
    # Dense: pipeline stages across nodes, one attention group: the KV splits over all GPUs.
    huge = dataclasses.replace(
        MODEL_PROFILES["mistral-large-2-123b"], total_params_b=1000.0, published_weight_gb={}
    )
    table = build_table(profiles=[huge], gpus=[GPU_PROFILES["H100"]])
    (bf16, fp8) = table.rows
    # BF16: 2000 GB over GPUs of 71.7 GiB usable, each keeping 20% for KV: 33 GPUs at
    # least, so 5 nodes.
    assert by_hand(huge, "H100", "bf16", 131072, 32).room < KV_SHARE * bf16.usable_per_gpu_gib * GIB
    assert (bf16.shape, bf16.nodes, bf16.gpus, bf16.replicas_per_node) == ("MultiNode", 5, 40, None)
    assert bf16.ratio is None
    assert bf16.attention_dp == 1
    assert bf16.requests_held == by_hand(huge, "H100", "bf16", 131072, 40).held
    assert (fp8.shape, fp8.nodes, fp8.gpus) == ("MultiNode", 3, 24)
    markdown = render_markdown(table)
    assert "| MultiNode | 40 (5 nodes) |" in markdown
    # Mixture of experts: data-parallel attention on every GPU; each holds its own requests.
    moe = dataclasses.replace(
        MODEL_PROFILES[SMALL_4], total_params_b=1000.0, published_weight_gb={}
    )
    (row,) = build_table(profiles=[moe], gpus=[GPU_PROFILES["H100"]]).rows
    assert (row.shape, row.nodes, row.gpus, row.attention_dp) == ("MultiNode", 3, 24, 24)
    assert row.requests_held == by_hand(moe, "H100", "fp8", 262144, 24, groups=24).held
    # Beyond 64 nodes there is no row to plan.
    vast = dataclasses.replace(huge, total_params_b=100_000.0)
    (none, _) = build_table(profiles=[vast], gpus=[GPU_PROFILES["H100"]]).rows
    assert (none.shape, none.nodes, none.gpus) == ("MultiNode", None, None)
    assert "| > 64 nodes |" in render_markdown(
        build_table(profiles=[vast], gpus=[GPU_PROFILES["H100"]])
    )


def test_the_docs_table_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sizing"]) == 0
    printed = capsys.readouterr().out
    assert printed == render_markdown(build_table())
    assert extract_block(SIZING_DOC.read_text()) == printed, (
        "the table in docs/sizing.md is out of date: run `make sizing-docs`"
    )


def test_the_docs_state_the_constants_and_the_small_4_rows() -> None:
    text = SIZING_DOC.read_text()
    assert "20% of usable" in text
    assert "10% headroom" in text
    assert "full copy on every GPU of the attention group" in text
    # The worked example: KV room per GPU and requests held, as the table has them.
    for line in (
        "| H100 | 71.7 GiB | 110.8, none: does not fit | 55.4, 16.3 GiB (23%) |",
        "| H200 | 126.4 GiB | 110.8, 15.5 GiB (12% < 20%) | 55.4, 70.9 GiB (56%) |",
        "16.3 / 5.625 = 2 |",
        "70.9 / 5.625 = 12 |",
        "50.3 / 5.625 = 8 |",
        "105.3 / 5.625 = 18 |",
    ):
        assert line in text, line
    assert "Limits of the arithmetic" in text
    assert "pools KV" not in text  # the caveat the per-GPU arithmetic fixed


def test_the_cli_prints_json_for_tools(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sizing", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["headroom"], data["kvShare"], data["nodeGpus"]) == (0.1, 0.2, 8)
    assert data["gpuCounts"] == [1, 2, 4, 8]
    assert len(data["rows"]) == len(build_table().rows)
    first = data["rows"][0]
    assert first["profile"] == SMALL_4
    assert (first["gpu"], first["precision"], first["gpus"], first["cookbookGpus"]) == (
        "H100",
        "fp8",
        2,
        2,
    )
    assert first["quantizations"] == ["auto", "fp8"]
    assert first["ratio"] == 1.0
    assert (first["attention"], first["attentionDp"]) == ("MLA", 1)
    assert (first["kvPerRequestPerGpuGib"], first["requestsHeld"]) == (5.625, 2)
    assert first["weightsPerGpuGib"] == pytest.approx(55.41, abs=0.01)
    assert "weights 110.8 GiB (fp8), 55.4 GiB per GPU" in first["memory"]


def test_the_cli_plans_at_a_shorter_context(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sizing", "--context-length", "65536"]) == 0
    out = capsys.readouterr().out
    assert "a context of 65536 tokens" in out
    assert "| 262144 |" not in out
    with pytest.raises(SystemExit) as refused:
        main(["sizing", "--context-length", "100"])
    assert refused.value.code == 2


def test_the_cli_writes_and_checks_a_docs_block(tmp_path: Path) -> None:
    doc = tmp_path / "sizing.md"
    doc.write_text(f"# Sizing\n\n{BEGIN_MARKER}\nstale\n{END_MARKER}\n\nafter\n")
    assert main(["sizing", "--check-docs", str(doc)]) == 1
    assert main(["sizing", "--write-docs", str(doc)]) == 0
    assert main(["sizing", "--check-docs", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# Sizing\n\n")
    assert text.endswith(f"{END_MARKER}\n\nafter\n")
    assert extract_block(text) == render_markdown(build_table())
    (tmp_path / "plain.md").write_text("no markers\n")
    with pytest.raises(SystemExit, match="sizing-table:begin"):
        main(["sizing", "--check-docs", str(tmp_path / "plain.md")])


def test_replace_block_is_idempotent() -> None:
    doc = f"a\n{BEGIN_MARKER}\n{END_MARKER}\nb\n"
    once = replace_block(doc, "table\n")
    assert once == f"a\n{BEGIN_MARKER}\ntable\n{END_MARKER}\nb\n"
    assert replace_block(once, "table\n") == once

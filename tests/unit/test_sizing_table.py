"""The sizing table: cookbook agreement, arithmetic re-checked by hand, docs in sync, CLI."""

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
SMALL_4 = "mistral-small-4-119b"

# The figures docs/sizing.md states, written out here rather than imported so that the
# arithmetic is checked independently of core/sizing.py: a change to any of them must
# change the docs too.
HEADROOM = 0.10
TARGET_SEQUENCES = 4
NODE_GPUS = 8
BYTES_PER_PARAM = {"bf16": 2.0, "fp8": 1.0, "fp4": 0.5625}
KV_BYTES = 2  # BF16 cache
GIB = 2**30


def rows_of(profile: str) -> list[SizingRow]:
    return [row for row in build_table().rows if row.profile == profile]


def weights_bytes(profile: ModelProfile, precision: Precision) -> float:
    if precision in profile.published_weight_gb:
        return profile.published_weight_gb[precision] * 1e9
    return profile.total_params_b * 1e9 * BYTES_PER_PARAM[precision]


def offered_bytes(gpu: GpuName, gpus: int) -> float:
    return gpus * GPU_PROFILES[gpu].memory_mib * 2**20 * (1 - HEADROOM)


def test_small_4_matches_the_sglang_cookbook() -> None:
    by_key = {(row.gpu, row.precision): row for row in rows_of(SMALL_4)}
    # FP8 tp=2 on Hopper, tp=1 on Blackwell; NVFP4 tp=1 (Blackwell only).
    expected: dict[tuple[GpuName, Precision], int] = {
        ("H100", "fp8"): 2,
        ("H200", "fp8"): 2,
        ("B200", "fp8"): 1,
        ("B200", "fp4"): 1,
    }
    assert set(by_key) == set(expected)
    for key, gpus in expected.items():
        row = by_key[key]
        assert row.shape == "Compact", key
        assert row.cookbook_gpus == gpus, key
        assert row.gpus == gpus, key
        assert row.ratio == 1.0, key
        assert row.replicas_per_node == NODE_GPUS // gpus, key


def test_small_4_caches_the_mla_latent_only() -> None:
    # 36 layers x (256 latent + 64 RoPE values) x 2 bytes: 22.5 KiB per token.
    row = rows_of(SMALL_4)[0]
    assert row.kv_bytes_per_token == 36 * (256 + 64) * 2 == 23040
    assert row.kv_per_sequence_gib == pytest.approx(262144 * 23040 / GIB) == 5.625


def test_every_row_holds_its_weights_and_kv_on_the_fewest_gpus() -> None:
    rows = build_table().rows
    assert rows
    for row in rows:
        profile = MODEL_PROFILES[row.profile]
        where = f"{row.profile} on {row.gpu} in {row.precision}"
        assert row.shape == "Compact", where  # every catalogued model fits one node
        assert row.gpus is not None
        weights = weights_bytes(profile, row.precision)
        kv_per_request = (
            profile.layers * profile.kv_values_per_token_layer * KV_BYTES * row.context_length
        )
        need = weights + TARGET_SEQUENCES * kv_per_request
        offered = offered_bytes(row.gpu, row.gpus)
        assert need <= offered, where
        if row.gpus > 1:  # the next smaller tensor-parallel size would not hold it
            assert need > offered_bytes(row.gpu, row.gpus // 2), where
        assert row.sequences_held == math.floor((offered - weights) / kv_per_request), where
        assert row.sequences_held >= TARGET_SEQUENCES, where
        assert row.weights_gib == pytest.approx(weights / GIB), where
        assert row.need_gib == pytest.approx(need / GIB), where
        assert row.offered_gib == pytest.approx(offered / GIB), where
        assert row.replicas_per_node == NODE_GPUS // row.gpus, where
        assert row.context_length == profile.max_context_length, where


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
    """A Compact MistralModel gets the GPUs its row shows."""
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


def test_a_shorter_context_is_planned_and_capped_at_each_maximum() -> None:
    table = build_table(context_length=131072)
    assert table.context_length == 131072
    for row in table.rows:
        maximum = MODEL_PROFILES[row.profile].max_context_length
        assert row.context_length == min(131072, maximum)
    # Half the context: one H200 holds Small 4 FP8 with 4 requests (the cookbook says 2).
    h200 = next(r for r in table.rows if (r.profile, r.gpu) == (SMALL_4, "H200"))
    assert (h200.gpus, h200.ratio, h200.replicas_per_node) == (1, 0.5, 8)


def test_a_model_no_node_holds_is_a_multinode_row() -> None:
    huge = dataclasses.replace(
        MODEL_PROFILES["mistral-large-2-123b"], total_params_b=1000.0, published_weight_gb={}
    )
    table = build_table(profiles=[huge], gpus=[GPU_PROFILES["H100"]])
    (bf16, fp8) = table.rows
    # BF16: 2000 GB of weights + 4 x 44 GiB of KV over 8 x 71.7 GiB per node: 4 nodes.
    assert (bf16.shape, bf16.nodes, bf16.gpus, bf16.replicas_per_node) == ("MultiNode", 4, 32, None)
    assert bf16.ratio is None
    assert (fp8.shape, fp8.nodes) == ("MultiNode", 2)
    markdown = render_markdown(table)
    assert "| MultiNode | 32 (4 nodes) |" in markdown


def test_the_docs_table_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sizing"]) == 0
    printed = capsys.readouterr().out
    assert printed == render_markdown(build_table())
    assert extract_block(SIZING_DOC.read_text()) == printed, (
        "the table in docs/sizing.md is out of date: run `make sizing-docs`"
    )


def test_the_cli_prints_json_for_tools(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sizing", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["headroom"], data["targetSequences"], data["nodeGpus"]) == (0.1, 4, 8)
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
    assert "weights 110.8 GiB (fp8)" in first["memory"]


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

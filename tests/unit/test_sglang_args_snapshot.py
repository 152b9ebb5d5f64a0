"""The snapshot of SGLang 0.5.23's real parser, and the parser rebuilt from it."""

from __future__ import annotations

import pytest

from tests.support.sglang_args import (
    SglangArgsError,
    build_parser,
    choices_of,
    deprecated_flags,
    load_snapshot,
    option_strings,
    parse_sglang_command,
    used_deprecated_flags,
)

pytestmark = pytest.mark.unit

VERSION = "0.5.23"
LAUNCH = ["python3", "-m", "sglang.launch_server"]

OPERATOR_FLAGS = [
    "--model-path",
    "--host",
    "--port",
    "--tp-size",
    "--ep-size",
    "--pp-size",
    "--attn-dp-size",
    "--nnodes",
    "--node-rank",
    "--dist-init-addr",
    "--moe-a2a-backend",
    "--reasoning-parser",
    "--tool-call-parser",
    "--context-length",
    "--served-model-name",
    "--enable-metrics",
    "--trust-remote-code",
    "--load-format",
    "--model-config-parser",
]


def mistral_small_4_command(node_rank: int) -> list[str]:
    """A two-node Mistral Small 4 group as the operator would render it."""
    return [
        *LAUNCH,
        "--model-path",
        "/models/renamed-cache",
        "--served-model-name",
        "mistral-small-4",
        "--host",
        "0.0.0.0",
        "--port",
        "30000",
        "--tp-size",
        "16",
        "--ep-size",
        "16",
        "--pp-size",
        "1",
        "--attn-dp-size",
        "2",
        "--nnodes",
        "2",
        "--node-rank",
        str(node_rank),
        "--dist-init-addr",
        "group-0-leader.ns.svc:5000",
        "--moe-a2a-backend",
        "deepep",
        "--reasoning-parser",
        "mistral",
        "--tool-call-parser",
        "mistral",
        "--model-config-parser",
        "mistral",
        "--load-format",
        "mistral",
        "--context-length",
        "262144",
        "--enable-metrics",
        "--trust-remote-code",
    ]


def test_snapshot_is_for_the_pinned_version() -> None:
    snapshot = load_snapshot(VERSION)
    assert snapshot["sglang_version"] == VERSION
    assert snapshot["generated_by"] == "hack/snapshot-sglang-args.py"
    assert len(snapshot["actions"]) > 400


@pytest.mark.parametrize("flag", OPERATOR_FLAGS)
def test_snapshot_has_the_flags_the_operator_renders(flag: str) -> None:
    assert flag in option_strings(VERSION)


def test_rebuilt_parser_has_every_recorded_option_string() -> None:
    snapshot = load_snapshot(VERSION)
    parser = build_parser(snapshot)
    rebuilt = {option for action in parser._actions for option in action.option_strings}
    assert rebuilt == option_strings(VERSION)


def test_attention_dp_and_ep_moe_flags_are_deprecated_or_gone() -> None:
    assert "--enable-dp-attention" in deprecated_flags(VERSION)
    assert "--enable-ep-moe" not in option_strings(VERSION)
    with pytest.raises(SglangArgsError) as refused:
        parse_sglang_command([*LAUNCH, "--model-path", "m", "--enable-ep-moe"])
    assert refused.value.flag == "--enable-ep-moe"


def test_mistral_is_a_reasoning_and_tool_call_parser_choice() -> None:
    assert "mistral" in (choices_of("--reasoning-parser", VERSION) or [])
    assert "mistral" in (choices_of("--tool-call-parser", VERSION) or [])
    assert "mistral" in (choices_of("--load-format", VERSION) or [])


def test_moe_a2a_backend_choices() -> None:
    choices = choices_of("--moe-a2a-backend", VERSION) or []
    assert {"none", "deepep", "mooncake", "flashinfer"} <= set(choices)


@pytest.mark.parametrize("node_rank", [0, 1])
def test_multi_node_mistral_small_4_command_parses(node_rank: int) -> None:
    args = parse_sglang_command(mistral_small_4_command(node_rank), VERSION, allow_abbrev=False)
    assert args.model_path == "/models/renamed-cache"
    assert args.served_model_name == "mistral-small-4"
    assert args.host == "0.0.0.0"
    assert args.port == 30000
    assert (args.tp_size, args.ep_size, args.pp_size, args.attn_dp_size) == (16, 16, 1, 2)
    assert (args.nnodes, args.node_rank) == (2, node_rank)
    assert args.dist_init_addr == "group-0-leader.ns.svc:5000"
    assert args.moe_a2a_backend == "deepep"
    assert args.reasoning_parser == "mistral"
    assert args.tool_call_parser == "mistral"
    assert args.model_config_parser == "mistral"
    assert args.load_format == "mistral"
    assert args.context_length == 262144
    assert args.enable_metrics is True
    assert args.trust_remote_code is True
    assert args.dp_size == 1
    assert used_deprecated_flags(mistral_small_4_command(node_rank), VERSION) == []


def test_unset_flags_keep_sglang_defaults() -> None:
    args = parse_sglang_command([*LAUNCH, "--model-path", "m"], VERSION)
    assert (args.tp_size, args.ep_size, args.nnodes, args.node_rank) == (1, 1, 1, 0)
    assert args.enable_metrics is False


def test_context_length_accepts_sglang_suffixes() -> None:
    args = parse_sglang_command([*LAUNCH, "--model-path", "m", "--context-length", "256Ki"])
    assert args.context_length == 262144


@pytest.mark.parametrize(
    ("extra", "flag", "detail"),
    [
        (["--no-such-flag", "1"], "--no-such-flag", "unrecognized"),
        (["--moe-a2a-backend", "nope"], "--moe-a2a-backend", "invalid choice: 'nope'"),
        (["--reasoning-parser", "mistral-small"], "--reasoning-parser", "invalid choice"),
        (["--tp-size", "sixteen"], "--tp-size", "invalid int value: 'sixteen'"),
        (["--tp-size", "1.5"], "--tp-size", "invalid int value"),
        (["--port=http"], "--port", "invalid int value"),
        (["--enable-metrics", "true"], "true", "unrecognized"),
        (["--load-format", "hf"], "--load-format", "invalid choice"),
    ],
)
def test_refused_commands_name_the_flag(extra: list[str], flag: str, detail: str) -> None:
    with pytest.raises(SglangArgsError) as refused:
        parse_sglang_command([*LAUNCH, "--model-path", "m", *extra], VERSION)
    assert refused.value.flag == flag
    assert flag in str(refused.value)
    assert detail in str(refused.value)


def test_missing_value_is_refused() -> None:
    with pytest.raises(SglangArgsError, match="--node-rank") as refused:
        parse_sglang_command([*LAUNCH, "--model-path", "m", "--node-rank"], VERSION)
    assert refused.value.flag == "--node-rank"


def test_missing_model_path_is_refused() -> None:
    with pytest.raises(SglangArgsError, match="--model-path") as refused:
        parse_sglang_command([*LAUNCH, "--tp-size", "8"], VERSION)
    assert refused.value.flag == "--model-path"


def test_abbreviations_follow_sglang_unless_full_spelling_is_required() -> None:
    command = [*LAUNCH, "--model-path", "m", "--tp", "8"]
    assert parse_sglang_command(command, VERSION).tp_size == 8
    with pytest.raises(SglangArgsError) as refused:
        parse_sglang_command(command, VERSION, allow_abbrev=False)
    assert refused.value.flag == "--tp"


def test_ambiguous_abbreviation_is_refused() -> None:
    with pytest.raises(SglangArgsError, match="ambiguous") as refused:
        parse_sglang_command([*LAUNCH, "--model-path", "m", "--pp", "2"], VERSION)
    assert refused.value.flag == "--pp"


def test_deprecated_flags_are_detected() -> None:
    command = [*LAUNCH, "--model-path", "m", "--dp-size", "2", "--enable-dp-attention"]
    assert parse_sglang_command(command, VERSION).enable_dp_attention is True
    assert used_deprecated_flags(command, VERSION) == ["--enable-dp-attention"]


def test_other_launchers_are_refused() -> None:
    with pytest.raises(SglangArgsError, match="not an SGLang launch command"):
        parse_sglang_command(["python3", "-m", "vllm.entrypoints.openai.api_server"], VERSION)

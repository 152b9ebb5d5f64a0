"""The process kubelet's pure helpers: `$(VAR)` expansion, mount path translation, log tails."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.process_kubelet import (
    exit_code_of,
    expand_vars,
    host_dir,
    model_path_arg,
    tail_message,
    translate_path,
    weights_problem,
)


def test_expand_vars_replaces_known_names_and_keeps_the_rest() -> None:
    env = {"KEY": "abc", "ROOT": "/cache"}
    assert expand_vars("$(ROOT)/$(KEY)", env) == "/cache/abc"
    assert expand_vars("$(MISSING)/x", env) == "$(MISSING)/x"
    assert expand_vars("$$(KEY) costs $$", env) == "$(KEY) costs $"


def test_translate_path_maps_paths_under_a_mount_and_nothing_else() -> None:
    mounts = [("/cache", Path("/tmp/n/cache")), ("/cache/deep", Path("/tmp/other"))]
    assert translate_path("/cache", mounts) == "/tmp/n/cache"
    assert translate_path("/cache/key", mounts) == "/tmp/n/cache/key"
    assert translate_path("/cache/deep/x", mounts) == "/tmp/other/x"  # the longest mount wins
    assert translate_path("--dest=/cache/key", mounts) == "--dest=/tmp/n/cache/key"
    assert translate_path("/cachefill", mounts) == "/cachefill"
    assert translate_path("hf://org/repo", mounts) == "hf://org/repo"
    assert translate_path("a=/cache/key", mounts) == "a=/cache/key"  # not a flag


def test_tail_message_keeps_the_last_lines_within_the_byte_limit() -> None:
    log = b"".join(b"line %d\n" % i for i in range(200))
    assert tail_message(log).splitlines()[-1] == "line 199"
    assert len(tail_message(log).splitlines()) == 80
    assert len(tail_message(b"x" * 5000).encode()) == 2048


def test_host_dir_and_exit_codes() -> None:
    assert host_dir(Path("/r"), "h200-1", "/var/lib/c") == Path("/r/h200-1/var/lib/c")
    assert exit_code_of(4) == 4
    assert exit_code_of(-9) == 137


def test_model_path_arg_reads_both_spellings() -> None:
    pod = {"spec": {"containers": [{"args": ["--port", "30000", "--model-path", "/model/k"]}]}}
    assert model_path_arg(pod) == "/model/k"
    pod = {"spec": {"containers": [{"command": ["python", "--model-path=/model/x"]}]}}
    assert model_path_arg(pod) == "/model/x"
    assert model_path_arg({"spec": {"containers": [{"args": ["--model-path"]}]}}) is None


def test_weights_problem_is_what_stops_a_server_loading_a_copy(tmp_path: Path) -> None:
    copy = tmp_path / "key"
    assert weights_problem(copy) == "key: no such directory"
    copy.mkdir()
    assert weights_problem(copy) is None  # no manifest: not a cache's copy, nothing listed
    (copy / ".mistral-cache.json").write_text(
        json.dumps({"files": [{"path": "a", "size": 3}, {"path": "d/b", "size": 1}]})
    )
    assert weights_problem(copy) == "a: no such file"
    (copy / "a").write_bytes(b"ab")
    assert weights_problem(copy) == "a: 2 bytes, expected 3"
    (copy / "a").write_bytes(b"xyz")  # the right size: a changed byte loads silently
    (copy / "d").mkdir()
    (copy / "d" / "b").write_bytes(b"1")
    assert weights_problem(copy) is None

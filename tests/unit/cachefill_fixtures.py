"""What the cachefill and cacheclean unit tests share.

A stub hub serving a small repository (`hub`; `hub_env` also points `HF_ENDPOINT` and
`HF_TOKEN` at it; `refused_token` then sets a token it refuses), the command run in
this process (`run`), a cache root under the test's temporary directory (`root`),
where a fill of the repository goes (`dest_in`), its arguments (`fill_args`), and the
same fill as a subprocess (`start_fill`). A test module imports the fixtures it uses
(`hub_fixture` for `hub` and so on: pytest finds a fixture in the test module by the
name it declares).
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mistral_operator.cachefill.fill import MiB
from mistral_operator.cachefill.layout import Layout, part_path
from mistral_operator.cachefill.main import main
from mistral_operator.core.revision import cache_key
from tests.support.stub_hub import StubHub, StubRepo, run_stub_hub

REPO = "mistral-sim/Tiny-MoE"
SOURCE = f"hf://{REPO}"
TOKEN = "hf_stub_token"
KEY = cache_key(SOURCE, "main")  # where a fill of SOURCE at main goes under the root
OTHER = cache_key("hf://mistral-sim/Other", "main")
SHARD = "model-00001-of-00002.safetensors"  # the largest file of weights()


def weights() -> dict[str, bytes]:
    """About 4 MiB: two LFS shards, a git-stored index and config, one file in a folder."""
    rng = random.Random(7)
    return {
        "model-00001-of-00002.safetensors": rng.randbytes(2 * MiB + 123),
        "model-00002-of-00002.safetensors": rng.randbytes(MiB + 4567),
        "model.safetensors.index.json": json.dumps({"weight_map": {"a": "1"}}).encode(),
        "config.json": b'{"model_type": "mistral"}\n',
        "tokenizer/tokenizer.json": rng.randbytes(300_000),
    }


@pytest.fixture(name="hub")
def hub_fixture() -> Iterator[StubHub]:
    """A stub hub that wants TOKEN and serves weights() as REPO."""
    with run_stub_hub(token=TOKEN) as stub:
        stub.add_repo(REPO, weights())
        yield stub


@pytest.fixture(name="hub_env")
def hub_env_fixture(hub: StubHub, monkeypatch: pytest.MonkeyPatch) -> StubHub:
    """The hub, with HF_ENDPOINT and HF_TOKEN set for a run in this process."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return hub


@pytest.fixture(name="refused_token", params=[None, "hf_wrong"], ids=["no-token", "wrong-token"])
def refused_token_fixture(
    hub_env: StubHub, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> str | None:
    """HF_TOKEN left out, then wrong (a test using it runs once each way); the token."""
    token: str | None = request.param
    if token is None:
        monkeypatch.delenv("HF_TOKEN")
    else:
        monkeypatch.setenv("HF_TOKEN", token)
    return token


def repo_of(hub: StubHub) -> StubRepo:
    return hub.repos[REPO]


def root_in(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(name="root")
def root_fixture(tmp_path: Path) -> Path:
    """An empty cache root (`cache.hostPath` on a node): where dest_in's keys go."""
    root = root_in(tmp_path)
    root.mkdir()
    return root


def dest_in(tmp_path: Path, revision: str = "main") -> Path:
    """Where a fill of SOURCE at revision goes (not made: the fill makes it)."""
    return root_in(tmp_path) / cache_key(SOURCE, revision)


def leave_part(dest: Path, repo: StubRepo, name: str, data: bytes) -> None:
    """What a killed run leaves: `data` as the part of `name` in the commit's temp dir."""
    temp = Layout(dest).temp(repo.commit)
    temp.mkdir(parents=True)
    part_path(temp, name).write_bytes(data)


def killed_fill(hub: StubHub, tmp_path: Path, kept: int) -> Path:
    """The destination of a fill killed with the first `kept` bytes of SHARD on disk."""
    dest = dest_in(tmp_path)
    repo = repo_of(hub)
    leave_part(dest, repo, SHARD, repo.files[SHARD].data[:kept])
    return dest


def fill_args(dest: Path, *extra: str, source: str = SOURCE) -> list[str]:
    """`cachefill` arguments with quick progress and retries."""
    return [
        "cachefill",
        "--source",
        source,
        "--dest",
        str(dest),
        "--progress-interval",
        "0.05",
        "--retries",
        "1",
        "--retry-delay",
        "0.01",
        *extra,
    ]


class Runner:
    """Runs the command in this process; err is its stderr plus its log records."""

    def __init__(self, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture):
        self.capfd = capfd
        self.caplog = caplog

    def __call__(self, args: list[str]) -> tuple[int, str, str]:
        self.caplog.clear()
        with self.caplog.at_level(logging.INFO, logger="mistral_operator.cachefill"):
            code = main(args)
        out, err = self.capfd.readouterr()
        return code, out, err + self.caplog.text


@pytest.fixture(name="run")
def run_fixture(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Runner:
    return Runner(capfd, caplog)


def subprocess_env(hub: StubHub) -> dict[str, str]:
    return {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN}


def fill_command(dest: Path, *extra: str) -> list[str]:
    """The fill of fill_args as a command line: `python -m mistral_operator.cachefill`."""
    return [sys.executable, "-m", "mistral_operator.cachefill", *fill_args(dest, *extra)[1:]]


def start_fill(dest: Path, hub: StubHub, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        fill_command(dest, *extra),
        env=subprocess_env(hub),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

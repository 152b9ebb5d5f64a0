"""The quick start's weights for tests: a small stand-in repository on the stub hub, and the
Secret that points a model's fill Jobs at it (HF_ENDPOINT, as a mirror would be set)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tests.support.cluster import Cluster
from tests.support.stub_hub import StubHub, StubRepo, run_stub_hub

# What the quick start serves (its profile's repository), as the stub hub offers it.
REPO_ID = "mistralai/Mistral-Small-4-119B-2603"
SOURCE = f"hf://{REPO_ID}"
SECRET = "weights-hub"
SHARDS = 3
SHARD_BYTES = 256 * 1024


def shard_name(index: int) -> str:
    return f"consolidated-{index + 1:05d}-of-{SHARDS:05d}.safetensors"


def weight_files() -> dict[str, bytes]:
    """A few small shards with distinct, deterministic content, and the small JSON files."""
    files = {
        "config.json": json.dumps({"model_type": "mistral3", "num_experts": 128}).encode(),
        "tokenizer_config.json": b'{"model_max_length": 262144}\n',
    }
    for i in range(SHARDS):
        seed = hashlib.sha256(f"shard-{i}".encode()).digest()
        files[shard_name(i)] = (seed * (SHARD_BYTES // len(seed) + 1))[:SHARD_BYTES]
    return files


def serve_weights(hub: StubHub) -> StubRepo:
    return hub.add_repo(REPO_ID, weight_files())


def hub_secret(cluster: Cluster, namespace: str, hub: StubHub, *, token: str = "") -> None:
    """The Secret a model names in model.credentialsSecretRef: where the hub is, and a token."""
    data = {"HF_ENDPOINT": hub.url}
    if token:
        data["HF_TOKEN"] = token
    secret: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": namespace},
        "stringData": data,
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(secret))


def main(argv: list[str] | None = None) -> int:
    """Serve the quick start's stand-in weights until SIGTERM (for `make demo`)."""
    import argparse  # noqa: PLC0415 - only this entry point needs it
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--url-file", type=Path, required=True, help="where to write its URL")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with run_stub_hub() as hub:
        serve_weights(hub)
        args.url_file.write_text(hub.url + "\n")
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The operator image, built by `make image` and run in a real container runtime (podman
with runc) as the chart's Deployment says: non-root, read-only root, no capabilities.

Skipped, with the reason, where podman or runc is missing or the build cannot run
(it needs root); .ci/run installs the runtime, so CI always runs these.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.caches import cached_quickstart, fill_jobs
from tests.support.chart import by_kind, template
from tests.support.cluster import REPO_ROOT, Cluster
from tests.support.image import (
    Built,
    Podman,
    build_image,
    missing_runtime,
    run_in_container,
    security_flags,
)
from tests.support.models import apply, wait_ready
from tests.support.operator import own_namespace, run_operator
from tests.support.stub_hub import StubHub
from tests.support.wait import wait_for
from tests.support.weights import REPO_ID

UID = 65532
# Run in the image: who it runs as, whether its root is writable, its CA bundle, $HOME.
WHO_AND_WHERE = """
import json, os, ssl, tempfile
try:
    open("/usr/local/bin/x", "w")
    root = "writable"
except OSError as e:
    root = e.strerror
tempfile.NamedTemporaryFile().close()  # /tmp is writable (the chart's emptyDir)
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "root": root, "home": os.path.expanduser("~"),
    "cas": ssl.create_default_context().cert_store_stats()["x509_ca"],
}))
"""


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    why = missing_runtime()
    if why:
        pytest.skip(why)
    runtime = Podman(tmp_path_factory.mktemp("podman"))
    yield runtime
    runtime.reset()


@pytest.fixture(scope="module")
def image(podman: Podman) -> Built:
    """The image `make image` builds from this tree, loaded from its docker-archive."""
    built = build_image()
    podman("load", "--quiet", "--input", str(built.archive))
    size = podman.inspect(built.reference)["Size"]
    print(f"make image: {built.reference} in {built.seconds:.0f} s, {size / 1e6:.1f} MB")
    return built


def deployment_pod(cluster: Cluster) -> tuple[dict[str, Any], dict[str, Any]]:
    """The operator's container and pod spec as the chart renders them by default."""
    (deployment,) = by_kind(template(cluster), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container, pod


def locked_packages() -> dict[str, str]:
    lock = (REPO_ROOT / "requirements.lock").read_text()
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^ \\]+)", lock, re.MULTILINE)
    return {name.lower().replace("_", "-"): version for name, version in pins}


def in_image(podman: Podman, image: Built, flags: list[str], script: str) -> str:
    result = podman(
        "run", "--rm", *flags, "--entrypoint", "/usr/bin/python3", image.reference, "-c", script
    )
    return result.stdout


def test_the_chart_deploys_what_make_image_builds(
    cluster: Cluster, podman: Podman, image: Built
) -> None:
    container, _ = deployment_pod(cluster)
    assert container["image"] == image.reference
    # The cache-fill Jobs run the same image: the chart says so, and so does the image.
    assert f"--cache-fill-image={image.reference}" in container["args"]
    config = podman.inspect(image.reference)["Config"]
    assert f"MISTRAL_OPERATOR_IMAGE={image.reference}" in config["Env"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["/usr/local/bin/mistral-operator"]
    assert config["Cmd"] == ["run"]
    chart = yaml.safe_load((REPO_ROOT / "charts" / "mistral-operator" / "Chart.yaml").read_text())
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == chart["appVersion"]
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert labels["org.opencontainers.image.revision"].removesuffix("-dirty") == head


def test_the_image_holds_the_lock_and_the_operator_and_no_installer(
    podman: Podman, image: Built
) -> None:
    listing = in_image(
        podman, image, [],
        "import importlib.metadata as m, importlib.util as u, json;"
        "print(json.dumps({'dists': {d.metadata['Name'].lower().replace('_', '-'): d.version"
        " for d in m.distributions()}, 'pip': u.find_spec('pip') is not None}))",
    )  # fmt: skip
    found = json.loads(listing)
    chart = yaml.safe_load((REPO_ROOT / "charts" / "mistral-operator" / "Chart.yaml").read_text())
    assert found["dists"] == locked_packages() | {"mistral-operator": chart["appVersion"]}
    assert found["pip"] is False


def test_the_image_runs_as_the_chart_runs_it(
    cluster: Cluster, podman: Podman, image: Built, weights_hub: StubHub, tmp_path: Path
) -> None:
    container, pod = deployment_pod(cluster)
    flags = security_flags(container, pod)
    assert "--read-only" in flags  # what the chart asks
    assert f"{UID}:{UID}" in flags
    out = podman("run", "--rm", *flags, image.reference, "--help").stdout
    assert "cachefill" in out
    assert "run" in out

    report = json.loads(in_image(podman, image, flags, WHO_AND_WHERE))
    assert report == {
        "uid": UID, "gid": UID, "root": "Read-only file system",
        "cas": report["cas"], "home": "/home/nonroot",
    }  # fmt: skip
    assert report["cas"] > 100, "the CA bundle is in the image and found by default"

    # The fill program, from the image, fills a directory from a hub as a fill Job does.
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    fill = podman(
        "run", "--rm", *flags, "--network", "host", "--volume", f"{cache}:/cache",
        "--env", f"HF_ENDPOINT={weights_hub.url}", image.reference,
        "cachefill", "--source", f"hf://{REPO_ID}", "--revision", "main", "--dest", "/cache/key",
    )  # fmt: skip
    assert "mistral-cachefill-progress" in fill.stdout
    filled = {p.name for p in (cache / "key").iterdir()}
    assert ".mistral-cache.json" in filled, filled
    assert len(filled) > 1


@pytest.mark.usefixtures("mistral_crd")
def test_the_operator_in_its_image_serves_the_quick_start(
    cluster: Cluster, podman: Podman, image: Built, weights_hub: StubHub, tmp_path: Path
) -> None:
    """The operator in the container, with the chart's ServiceAccount token, gets the
    quick start Ready; its fill Jobs name the same image."""
    container, pod = deployment_pod(cluster)
    name = f"mistral-operator-{uuid.uuid4().hex[:6]}"

    def in_container(kubeconfig: Path) -> list[str]:
        return run_in_container(
            podman, image.reference, name=name, flags=security_flags(container, pod),
            kubeconfig=kubeconfig,
        )  # fmt: skip

    # Slow enough that the fill Job is seen before the Ready fill retires it.
    rate, weights_hub.rate = weights_hub.rate, weights_hub.repos[REPO_ID].total_bytes / 3
    try:
        with (
            own_namespace(cluster, "im-", weights_hub) as ns,
            run_operator(cluster, tmp_path, namespaces=("im-*",), container=in_container) as op,
        ):
            apply(cluster, ns, cached_quickstart(weights_hub))
            jobs = wait_for(lambda: fill_jobs(cluster, ns), timeout=60, what="a fill Job")
            images = {
                c["image"] for job in jobs for c in job["spec"]["template"]["spec"]["containers"]
            }
            assert images == {image.reference}
            wait_ready(cluster, ns)
            print(cluster.kubectl("get", "mm", "-n", ns).stdout)
            print(f"the operator's log in its container:\n{op.log_tail(25)}")
            assert "Handler 'model_changed' succeeded" in op.log_tail(400)
            op.assert_clean()
    finally:
        weights_hub.rate = rate
        podman("rm", "--force", "--ignore", name, check=False)

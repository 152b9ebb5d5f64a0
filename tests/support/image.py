"""The operator image as tests use it: built by `make image`, run by podman with runc.

Podman gets a configuration and a storage of the test session's own (nothing of the
machine's is read or changed): runc rather than crun, cgroupfs, events to a file, and
ulimits within this process's own (podman's defaults ask for more than some hosts give).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.cluster import REPO_ROOT

BUILD_SCRIPT = REPO_ROOT / "hack" / "build-image.sh"
RUNTIME_TOOLS = ("podman", "runc")
# Where the operator's kubeconfig appears inside the container.
KUBECONFIG_IN_CONTAINER = "/etc/mistral-operator/kubeconfig"


def missing_runtime() -> str:
    """Why the image cannot be run here ('' when it can)."""
    missing = [tool for tool in RUNTIME_TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"no container runtime: {' and '.join(missing)} not installed "
            "(Debian packages podman and runc; .ci/run installs them)"
        )
    if os.geteuid() != 0:
        return "make image needs root (it unpacks Debian packages and sets file owners)"
    return ""


@dataclass(frozen=True)
class Built:
    reference: str
    archive: Path
    seconds: float
    log: str


def build_image() -> Built:
    """Run the build as `make image` does; the reference is its last line of output."""
    started = time.monotonic()
    result = subprocess.run(
        [str(BUILD_SCRIPT)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PY": str(REPO_ROOT / ".venv" / "bin" / "python")},
        check=False,
    )
    assert result.returncode == 0, f"make image failed:\n{result.stderr[-4000:]}"
    reference = result.stdout.strip().splitlines()[-1]
    version = reference.rsplit(":", 1)[1]
    archive = REPO_ROOT / "dist" / f"mistral-operator-{version}.tar"
    assert archive.is_file(), f"no docker-archive at {archive}"
    return Built(reference, archive, time.monotonic() - started, result.stderr)


class Podman:
    """podman with this session's own configuration and storage under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        _, nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
        _, nproc = resource.getrlimit(resource.RLIMIT_NPROC)
        nproc = 4096 if nproc == resource.RLIM_INFINITY else min(nproc, 4096)
        (root / "containers.conf").write_text(
            "[containers]\n"
            f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{root / "events.log"}"\n'
        )
        (root / "storage.conf").write_text(
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{root / "storage"}"\n'
            f'runroot = "{root / "run"}"\n'
        )
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(root / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
        }

    def command(self, *args: str) -> list[str]:
        """podman with this configuration, as a command line (``env`` execs podman, so a
        signal to the process reaches podman, which passes it to the container)."""
        conf = [f"{k}={self.env[k]}" for k in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF")]
        return ["env", *conf, "podman", *args]

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )
        if check:
            assert result.returncode == 0, (
                f"podman {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )
        return result

    def inspect(self, reference: str) -> dict[str, Any]:
        (image,) = json.loads(self("image", "inspect", reference).stdout)
        return dict(image)

    def reset(self) -> None:
        """Remove every container and image of this storage."""
        self("rm", "--all", "--force", check=False)
        self("system", "reset", "--force", check=False)


def security_flags(container: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    """podman flags for what a rendered Deployment's securityContexts ask of the runtime
    (a kubelet does the same with the pod's spec): the user, a read-only root, no
    capabilities, no privilege escalation, and an empty directory for each emptyDir."""
    ctx = {**(pod.get("securityContext") or {}), **(container.get("securityContext") or {})}
    flags = ["--user", f"{ctx['runAsUser']}:{ctx.get('runAsGroup', ctx['runAsUser'])}"]
    if ctx.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    for cap in (ctx.get("capabilities") or {}).get("drop") or []:
        flags.append(f"--cap-drop={cap}")
    if ctx.get("allowPrivilegeEscalation") is False:
        flags.append("--security-opt=no-new-privileges")
    empty_dirs = {v["name"] for v in pod.get("volumes") or [] if "emptyDir" in v}
    for mount in container.get("volumeMounts") or []:
        if mount["name"] in empty_dirs:
            # kubelet's emptyDir is writable by the pod's fsGroup; a tmpfs owned by the
            # user is the runtime's equivalent.
            flags += ["--mount", f"type=tmpfs,destination={mount['mountPath']},tmpfs-mode=1777"]
    return flags


def run_in_container(
    podman: Podman,
    reference: str,
    *,
    name: str,
    flags: Sequence[str],
    kubeconfig: Path,
) -> list[str]:
    """The command that runs the image's entrypoint as a pod would: host network (the
    API server listens on 127.0.0.1), the kubeconfig mounted read-only; the operator's
    arguments follow it."""
    return podman.command(
        "run", "--rm", "--name", name, "--network", "host", *flags,
        "--volume", f"{kubeconfig}:{KUBECONFIG_IN_CONTAINER}:ro",
        "--env", f"KUBECONFIG={KUBECONFIG_IN_CONTAINER}",
        reference,
    )  # fmt: skip

"""The local control plane as tests see it: start or reuse it, run kubectl and helm on it."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
HACK = REPO_ROOT / "hack"


def hack_value(name: str) -> str:
    """A value hack/lib.sh computes (cache paths), read the same way the scripts do."""
    out = subprocess.run(
        ["bash", "-c", f'source "{HACK}/lib.sh" >/dev/null && printf %s "${name}"'],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


@dataclass(frozen=True)
class Cluster:
    """A running local cluster reached through the admin kubeconfig."""

    kubeconfig: Path
    bin_dir: Path
    topology: str

    @classmethod
    def up(cls, topology: str) -> Cluster:
        """Start the cluster (building binaries if needed) or reuse the running one."""
        subprocess.run([str(HACK / "cluster-up.sh"), topology], check=True)
        return cls(
            kubeconfig=Path(hack_value("KUBECONFIG_ADMIN")),
            bin_dir=Path(hack_value("BIN_DIR")),
            topology=topology,
        )

    @property
    def node_disks(self) -> Path:
        """The simulated nodes' disks: they last as long as the cluster's state (its nodes'
        labels say what their caches hold), and go with it at cluster-down."""
        return Path(hack_value("CLUSTER_DIR")) / "node-disks"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def run(
        self,
        tool: str,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run a real binary of the cluster (kubectl, helm) with the admin kubeconfig."""
        result = subprocess.run(
            [str(self.bin_dir / tool), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{tool} {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, input=input, check=check, timeout=timeout)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, input=input, check=check, timeout=timeout)

    def get_json(self, *args: str) -> Any:
        """`kubectl get ... -o json`, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def token_kubeconfig(self, token: str, path: Path) -> Path:
        """Write a kubeconfig that reaches this cluster with a bearer token only; the CA
        certificate is embedded, so the file works where this machine's files are not
        (in a container)."""
        admin = json.loads(
            self.kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout
        )
        cluster = admin["clusters"][0]["cluster"]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": cluster}],
            "users": [{"name": "token", "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "token"}}],
            "current-context": "local",
        }
        path.write_text(json.dumps(config))
        return path

"""operator/Dockerfile and `make image` (hack/build-image.sh) build the same image.

Docker cannot run here, so the Dockerfile is read, not built: each thing the build
script puts into the image must be asked for in the Dockerfile too, and the other way
round. The image `make image` builds is checked by running it (tests/e2e/test_image.py).
"""

from __future__ import annotations

import re

import yaml

from tests.support.cluster import REPO_ROOT

DOCKERFILE = (REPO_ROOT / "operator" / "Dockerfile").read_text()
SCRIPT = (REPO_ROOT / "hack" / "build-image.sh").read_text()
CHART = REPO_ROOT / "charts" / "mistral-operator"


def logical_lines(text: str) -> list[str]:
    """Lines with their backslash continuations joined."""
    return re.sub(r"\\\n\s*", " ", text).splitlines()


def pip_installs(text: str) -> list[set[str]]:
    """The words of each `pip install` command."""
    return [
        set(line[line.index("pip") :].split())
        for line in logical_lines(text)
        if re.search(r"pip\S*\s+install\b", line)
    ]


def chart_reference() -> str:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return f"{values['image']['repository']}:{chart['appVersion']}"


def test_both_install_the_hashed_lock_as_binary_wheels_and_the_operator_without_deps() -> None:
    for name, text in (("Dockerfile", DOCKERFILE), ("build-image.sh", SCRIPT)):
        lock, operator = pip_installs(text)
        assert {"--require-hashes", "-r", "requirements.lock", "--only-binary=:all:"} <= lock, name
        assert "--no-compile" in lock, name
        assert {"--no-deps", "--no-compile"} <= operator, name
        assert "-r" not in operator, name


def test_both_start_from_debian_bookworm_python_3_11() -> None:
    assert re.search(r"^SUITE=bookworm$", SCRIPT, re.MULTILINE)
    assert re.search(r"^PYTHON=python3\.11$", SCRIPT, re.MULTILINE)
    stages = re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)
    assert stages == ["debian:bookworm-slim"] * 2
    assert DOCKERFILE.count("--no-install-recommends python3.11") == 2
    assert "ca-certificates" in DOCKERFILE
    assert '--include="$PYTHON,ca-certificates"' in SCRIPT


def test_both_prune_the_same_paths_and_install_the_same_entrypoint() -> None:
    for pruned in ("/bin", "/kubernetes/aio", "direct_url.json"):
        assert pruned in SCRIPT
        assert pruned in DOCKERFILE
    for shared in ("operator/image/mistral-operator", "hack/image-compile.py"):
        assert shared in SCRIPT
        assert shared in DOCKERFILE
    assert "--config.entrypoint=/usr/local/bin/mistral-operator --config.cmd=run" in " ".join(
        logical_lines(SCRIPT)
    )
    assert 'ENTRYPOINT ["/usr/local/bin/mistral-operator"]' in DOCKERFILE
    assert 'CMD ["run"]' in DOCKERFILE


def test_both_run_as_65532_with_the_same_environment_and_reference() -> None:
    assert re.search(r"^UID_GID=65532$", SCRIPT, re.MULTILINE)
    assert re.search(r"^USER 65532:65532$", DOCKERFILE, re.MULTILINE)
    script_env = set(re.findall(r'--config\.env="?([A-Z_]+)=', SCRIPT))
    env_block = next(line for line in logical_lines(DOCKERFILE) if line.startswith("ENV PATH"))
    docker_env = set(re.findall(r"([A-Z_]+)=", env_block))
    assert script_env == docker_env
    assert "MISTRAL_OPERATOR_IMAGE" in docker_env
    # The reference both give the image (and the cache-fill Jobs' default) is the chart's.
    assert f"ARG IMAGE={chart_reference()}" in DOCKERFILE
    assert f"docker build -f operator/Dockerfile -t {chart_reference()} ." in DOCKERFILE
    version = chart_reference().rsplit(":", 1)[1]
    assert f'org.opencontainers.image.version="{version}"' in DOCKERFILE

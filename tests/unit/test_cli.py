"""The console entry point answers --help and version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mistral_operator import __version__
from mistral_operator.cli import main


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "version" in capsys.readouterr().out


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == __version__


def test_installed_console_script_runs() -> None:
    exe = str(Path(sys.executable).with_name("mistral-operator"))
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "usage: mistral-operator" in result.stdout

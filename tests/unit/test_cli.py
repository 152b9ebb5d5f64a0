"""The console entry point answers --help and version, and checks what run is given."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kopf
import pytest

from mistral_operator import __version__
from mistral_operator.cli import build_parser, main
from mistral_operator.shell.settings import RuntimeOptions, apply_settings


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


def test_a_peering_lifetime_under_ten_seconds_is_refused_by_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--peering-lifetime-seconds", "5"])
    assert exit_info.value.code == 2
    assert "--peering-lifetime-seconds: 5 is less than 10" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--peering-lifetime-seconds", "soon"])
    assert "'soon' is not a whole number of seconds" in capsys.readouterr().err


def test_the_peering_lifetime_reaches_kopf() -> None:
    args = build_parser().parse_args(["run"])
    assert args.peering_lifetime_seconds == 15
    settings = kopf.OperatorSettings()
    apply_settings(settings, RuntimeOptions(peering_lifetime_seconds=20, standalone=False))
    assert settings.peering.lifetime == 20

"""Shared fixtures: an in-process CLI runner and small, real inputs made by the tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from eca_deploy.cli.main import main

pytest_plugins = ["tests.conftest_precision"]


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run `eca-deploy ARGS` in-process and return its exit code and output."""

    def run(*args: str | Path) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


def assert_one_line_error(result: CliResult, *needles: str) -> None:
    """A user error: non-zero exit, one line on stderr starting with 'error:', no traceback."""
    assert result.code != 0, result
    lines = [line for line in result.stderr.splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])

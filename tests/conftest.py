"""Shared fixtures: an in-process CLI runner and small, real inputs made by the tests."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from eca_deploy.cli.main import main

pytest_plugins = ["tests.conftest_precision", "tests.conftest_openvino", "tests.conftest_yolo"]


def tensorrt_gpu_reason() -> str | None:
    """Why TensorRT engines cannot be built here, or None when TensorRT and a CUDA GPU are present."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install 'eca-deploy[gpu]' on a machine with an NVIDIA GPU)"
    try:
        import tensorrt as trt

        if trt.Builder(trt.Logger(trt.Logger.ERROR)) is None:
            return "TensorRT found no usable CUDA GPU"
    except Exception as exc:  # any failure to create a builder means: no engines here
        return f"TensorRT cannot create a builder here: {exc}"
    return None


needs_tensorrt_gpu = pytest.mark.skipif(tensorrt_gpu_reason() is not None, reason=tensorrt_gpu_reason() or "")


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test caches (calibration ranges, timing caches) under a temporary $ECA_DEPLOY_CACHE, never the user's."""
    folder = tmp_path_factory.mktemp("eca_deploy_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ECA_DEPLOY_CACHE", str(folder))
        yield folder


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

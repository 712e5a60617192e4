"""Shared fixtures: an in-process CLI runner and small, real inputs made by the tests."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from eca_deploy.cli.main import main

pytest_plugins = ["tests.conftest_precision", "tests.conftest_openvino"]


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


def run_folder(factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder that every pytest-xdist worker of this run shares (their base folders' parent), for work done
    once per run whatever the number of workers: the first worker to need it makes it under `run_lock`."""
    base = factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on `folder` (a file beside it), so parallel workers make its content once."""
    with open(folder.with_name(folder.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test caches (calibration ranges, timing caches) under a temporary $ECA_DEPLOY_CACHE, never the user's."""
    folder = tmp_path_factory.mktemp("eca_deploy_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ECA_DEPLOY_CACHE", str(folder))
        yield folder


# pytest-xdist (`make test`: -n 2, --dist loadgroup from pyproject.toml) gives every worker its own session, so a
# module-scoped fixture shared by tests that land on both workers is made twice. Tests that use such a fixture run
# on one worker (one xdist_group per module), except in the modules named here, whose module fixtures are cheap
# and whose many tests are better spread over both workers.
SPREAD_MODULES = {"test_write_rule", "test_bad_input"}
# Long single tests and module groups start first, so that no worker is left with one at the end.
FIRST = ("test_doc_commands_run",)


def _module_fixture_group(item: pytest.Item) -> str | None:
    module = getattr(item, "module", None)
    if module is None or module.__name__.rpartition(".")[2] in SPREAD_MODULES:
        return None
    info = getattr(item, "_fixtureinfo", None)
    for name in info.names_closure if info else ():
        defs = info.name2fixturedefs.get(name) or ()
        if any(d.scope == "module" and d.baseid and item.nodeid.startswith(d.baseid) for d in defs):
            return module.__name__.rpartition(".")[2]
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    grouped = set()
    for item in items:
        group = _module_fixture_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
            grouped.add(item.nodeid)
    items.sort(key=lambda i: 0 if i.nodeid in grouped or i.originalname in FIRST else 1)  # type: ignore[attr-defined]


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

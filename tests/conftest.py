"""Shared fixtures: an in-process CLI runner and small, real inputs made by the tests."""

from __future__ import annotations

import ast
import atexit
import contextlib
import fcntl
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from eca_deploy.cli.main import main
from eca_deploy.plugin.onnxruntime_build import OP_LIBRARY_ENV, OP_LIBRARY_OFF

pytest_plugins = ["tests.conftest_precision", "tests.conftest_openvino", "tests.conftest_yolo"]

# The ONNX Runtime custom-op library off for the whole run (subprocesses inherit it): a developer's build under
# build/onnxruntime must not change what the tests run. The tests of the library pass it explicitly.
os.environ[OP_LIBRARY_ENV] = OP_LIBRARY_OFF


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


def _hypothesis_storage() -> None:
    """Hypothesis keeps its examples and the constants it reads from test modules in ./.hypothesis (the checkout), from
    collection on: point it at a temporary folder, removed when the run ends."""
    with contextlib.suppress(ImportError):
        from hypothesis.configuration import set_hypothesis_home_dir

        folder = tempfile.mkdtemp(prefix="eca-deploy-hypothesis-")
        atexit.register(shutil.rmtree, folder, True)
        set_hypothesis_home_dir(folder)


_hypothesis_storage()


def _one_compute_thread_per_worker() -> None:
    """Under pytest-xdist (`make test`: -n 2 on 2 cores) each worker gets one compute thread. PyTorch, ONNX Runtime
    and OpenVINO each default to every core, and their threads wait by spinning: two workers with two threads each
    on two cores spent about a third of the suite's CPU time waiting on each other. A thread count a test sets
    itself is kept; subprocesses get OMP_NUM_THREADS (PyTorch's default)."""
    os.environ["OMP_NUM_THREADS"] = "1"  # PyTorch's thread count when it is first imported (not yet: seconds)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    with contextlib.suppress(ImportError):
        import onnxruntime

        class OneThreadOptions(onnxruntime.SessionOptions):
            def __init__(self) -> None:
                super().__init__()
                self.intra_op_num_threads = 1

        onnxruntime.SessionOptions = OneThreadOptions
    with contextlib.suppress(ImportError):
        import openvino

        class OneThreadCore(openvino.Core):
            def compile_model(self, model: Any, device_name: Any = None, config: Any = None) -> Any:
                config = {"INFERENCE_NUM_THREADS": 1, **(config or {})}
                return super().compile_model(model, device_name or "CPU", config)

        openvino.Core = OneThreadCore


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker (a process that merely imports this file is not)
        _one_compute_thread_per_worker()


def run_folder(factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder that every pytest-xdist worker of this run shares (their base folders' parent), for work done
    once per run whatever the number of workers: the first worker to need it makes it under `run_lock`."""
    base = factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def download_folder(factory: pytest.TempPathFactory, name: str) -> Path:
    """Where a test keeps what it downloads, installs or trains once: this run's shared temporary folder, or
    $ECA_DEPLOY_TEST_CACHE/<name> when a developer opts in to keeping it across runs. Never the checkout."""
    kept = os.environ.get("ECA_DEPLOY_TEST_CACHE")
    if not kept:
        return run_folder(factory, name)
    folder = Path(kept).expanduser() / name
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


# pytest-xdist (`make test`: -n 2) gives every worker its own session, so a module-scoped fixture whose tests land
# on both workers is made twice, and a worker that needs what the other is making (a lock in run_folder) waits idle.
# So the tests go out in units: the tests that use a module's module-scoped fixtures (directly or through its other
# fixtures) go to one worker as one unit, except in the modules named in SPREAD_MODULES, whose module fixtures are
# cheap and whose many tests are better spread; the tests of every module that use one of SHARED_WORK's costly
# once-per-run fixtures join that work's unit (one worker makes it, while the other runs other tests); every other
# test goes on its own. Units start longest first: LONG's, in its order (measured, `--durations`), then the others by
# number of tests, so that no worker ends with a long unit alone.
SPREAD_MODULES = {"test_write_rule.py", "test_bad_input.py"}
SHARED_WORK = {
    "digits network": {"digits_onnx", "digits_fused"},  # trains a network (tests/digits.py)
    "host kernels": {"host"},  # compiles the CUDA kernels for the host (tests/kernels_host.py)
}
LONG = (  # unit names, or test names that start a unit's name
    "digits network",
    "tests/test_docs.py::test_doc_commands_run[detectors.md]",
    "tests/test_docs.py::test_doc_commands_run[byom.md]",
    "tests/test_deploy_commands.py::test_every_recorded_command_remakes_deploys_files",
    "tests/test_docs.py::test_doc_commands_run",
    "host kernels",
)


def _is_module_fixture(node: ast.FunctionDef) -> bool:
    return any(
        isinstance(d, ast.Call)
        and any(k.arg == "scope" and getattr(k.value, "value", None) == "module" for k in d.keywords)
        for d in node.decorator_list
    )


def _users(functions: list[ast.FunctionDef], shared: set[str]) -> set[str]:
    """The tests among `functions` that use a fixture named in `shared`, directly or through the module's fixtures."""
    args = {f.name: {a.arg for a in f.args.args} for f in functions}
    fixtures = [f.name for f in functions if not f.name.startswith("test")]
    while True:  # fixtures of the module built on a shared one share it too
        more = {name for name in fixtures if args[name] & shared} - shared
        if not more:
            break
        shared = shared | more
    return {f.name for f in functions if f.name.startswith("test") and args[f.name] & shared}


def fixture_sharing_tests(tests: Path) -> dict[str, dict[str, str]]:
    """{'tests/test_x.py': {test name: its unit}} for the tests that share costly fixtures, read from the sources:
    the unit is the name of the SHARED_WORK they use, or else their module's path."""
    units: dict[str, dict[str, str]] = {}
    for path in sorted(tests.glob("test_*.py")):
        module = f"tests/{path.name}"
        functions = [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)]
        found: dict[str, str] = {}
        if path.name not in SPREAD_MODULES:
            module_users = _users(functions, {f.name for f in functions if _is_module_fixture(f)})
            if len(module_users) > 1:
                found = dict.fromkeys(module_users, module)
        for work, names in SHARED_WORK.items():
            work_users = _users(functions, set(names))
            if work_users:  # the module's shared unit follows its tests into the work's unit
                found = {test: work if unit == module else unit for test, unit in found.items()}
                found.update(dict.fromkeys(work_users, work))
        if found:
            units[module] = found
    return units


def unit_of(nodeid: str, units: dict[str, dict[str, str]]) -> str:
    """The unit a test goes out in: its shared unit's name, or its own node id."""
    module, _, test = nodeid.partition("::")
    return units.get(module, {}).get(test.partition("[")[0], nodeid)


def _long_rank(unit: str) -> int:
    return next((i for i, name in enumerate(LONG) if unit.startswith(name)), len(LONG))


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: the suite also runs without pytest-xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "load":
        return None  # a mode asked for by name (--dist ...) is xdist's own
    from xdist.scheduler import LoadScopeScheduling

    units = fixture_sharing_tests(Path(__file__).parent)
    config.option.loadscopereorder = False  # the collection's order is the units' (pytest_collection_modifyitems)

    class FixtureSharingScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid, units)

        def remove_node(self, node: Any) -> str | None:
            """xdist 3.8's own puts a crashed worker's finished units back on the queue, where they go out as empty
            work that never completes, and the run hangs; it also reruns the test that crashed. Here only what is
            unfinished goes back, without the crashed test (xdist reports it failed)."""
            workload = self.assigned_work.pop(node)
            unfinished = {scope: unit for scope, unit in workload.items() if not all(unit.values())}
            if not unfinished:
                return None
            crashed = next(nodeid for unit in unfinished.values() for nodeid, done in unit.items() if not done)
            for unit in unfinished.values():
                unit.pop(crashed, None)
            self.workqueue.update({scope: unit for scope, unit in unfinished.items() if not all(unit.values())})
            for other in self.assigned_work:
                self._reschedule(other)
            return crashed

    return FixtureSharingScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each unit's tests together, the units longest first (LONG, then by number of tests), else in file order."""
    units = fixture_sharing_tests(Path(__file__).parent)
    of = [unit_of(item.nodeid, units) for item in items]
    size: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, unit in enumerate(of):
        size[unit] = size.get(unit, 0) + 1
        first.setdefault(unit, i)
    order = sorted(range(len(items)), key=lambda i: (_long_rank(of[i]), -size[of[i]], first[of[i]], i))
    items[:] = [items[i] for i in order]


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

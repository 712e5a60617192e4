"""scripts/gpu_acceptance.sh: valid bash, a one-line refusal where there is no GPU (the run itself needs one), and its
dry run: the preflight and the steps it picks, here and on a simulated bare GPU machine (no typer, pytest, onnx or
TensorRT). The run itself has never been seen on a GPU by these tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_acceptance.sh"


def test_script_parses() -> None:
    assert os.access(SCRIPT, os.X_OK)
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU driver is installed: the script would run")
def test_refuses_without_a_gpu(tmp_path: Path) -> None:
    out = tmp_path / "acceptance.md"
    done = subprocess.run([str(SCRIPT), str(out)], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line == "error: nvidia-smi not found: this script needs an NVIDIA GPU and its driver"
    assert not out.exists()


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file of the checkout with its size and modification time; not .git, nor the bytecode that Python
    itself writes when a parallel test imports a module for the first time, nor a virtual environment (make test's
    .venv-test: tens of thousands of files)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in (".git", "__pycache__") and not Path(folder, d, "pyvenv.cfg").exists()]
        for name in files:
            stat = (Path(folder) / name).stat()
            found[os.path.relpath(Path(folder) / name, root)] = (stat.st_size, stat.st_mtime_ns)
    return found


def _dry_run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHON": sys.executable, "TIME_LIMIT": "450", **env}
    return subprocess.run([str(SCRIPT), "--dry-run", *args], capture_output=True, text=True, check=False,
                          timeout=120, env=environ)  # fmt: skip


@pytest.mark.parametrize(
    ("profile", "needles"),
    [("host", ["would run: timeout", "tests/test_kernels_host.py", "preflight: present:"]),
     ("pip-trt", ["skip C++ TensorRT plugin: no TensorRT headers", "--ignore=tests/test_plugin_tensorrt.py",
                  "no C++ library"]),
     ("jetpack6", ["compute capability from nvidia-smi is '[N/A]': asking the CUDA runtime",
                   "skip torch.compile in the kernel benchmark: Triton is not installed",
                   "ECA_DEPLOY_PLUGIN=", "AOT Python plugin:"])],
)  # fmt: skip
def test_dry_run_prints_commands_and_skips_and_writes_nothing(profile: str, needles: list[str]) -> None:
    root = SCRIPT.parents[1]
    before = _snapshot(root)
    done = _dry_run("--profile", profile)
    assert done.returncode == 0, done.stderr
    for needle in needles:
        assert needle in done.stdout, (needle, done.stdout)
    assert "would run: timeout" in done.stdout and "pytest" in done.stdout
    assert "dry run: nothing was run or written" in done.stdout
    assert _snapshot(root) == before, "the dry run wrote into the checkout"


@pytest.mark.parametrize("limit", ["0", "-30"])
def test_a_spent_budget_skips_steps_instead_of_removing_the_limit(limit: str) -> None:
    """`timeout 0` runs without a limit and a negative duration exits 125: neither may be issued."""
    done = _dry_run("--profile", "jetpack6", TIME_LIMIT=limit)
    assert done.returncode == 0, done.stderr
    assert "would run" not in done.stdout and "timeout 0" not in done.stdout and "timeout -" not in done.stdout
    for name in ("build", "AOT plugin PTX on the GPU", "pytest -m gpu", "host execution of the kernels"):
        assert f"skip {name}: the time budget (TIME_LIMIT={limit}s) is spent" in done.stdout


def test_profile_is_checked() -> None:
    done = _dry_run("--profile", "windows")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --profile takes host, pip-trt or jetpack6"


SITECUSTOMIZE = """
import os, sys
_MISSING = {n for n in os.environ.get("SIMULATE_MISSING", "").split(",") if n}
class _Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _MISSING:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Missing())
"""
BARE = "typer,pytest,onnx,tensorrt,hypothesis,_pytest"


def _bare_env(tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH whose sitecustomize makes typer, pytest, onnx, hypothesis and TensorRT unimportable: the GPU box
    with PyTorch, CuPy and nvcc but none of the CLI's or the tests' dependencies."""
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {"PYTHONPATH": str(tmp_path), "SIMULATE_MISSING": BARE}


def test_the_bare_machine_simulation_hides_the_modules(tmp_path: Path) -> None:
    env = {**os.environ, **_bare_env(tmp_path)}
    code = (
        "import importlib\nfound = []\nfor m in ('pytest', 'typer', 'onnx', 'numpy'):\n    try:\n"
        "        importlib.import_module(m)\n        found.append(m)\n    except ImportError:\n        pass\n"
        "print(found)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "['numpy']"


@pytest.mark.skipif(shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").exists(),
                    reason="nvcc is not installed: the kernel steps need it, as on the GPU machine")  # fmt: skip
def test_dry_run_on_a_bare_machine_picks_the_kernel_steps(tmp_path: Path) -> None:
    """No typer/pytest/onnx/TensorRT: the preflight says so, the kernel checks, the AOT PTX check and the benchmark
    still run (none of them needs pytest or the CLI), and the pytest steps are skipped with the reason."""
    root = SCRIPT.parents[1]
    before = _snapshot(root)
    done = _dry_run(**_bare_env(tmp_path))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    missing = next(line for line in out.splitlines() if line.startswith("preflight: missing:"))
    for module in ("typer", "pytest", "onnx", "tensorrt"):
        assert f" {module}" in missing, missing
    present = next(line for line in out.splitlines() if line.startswith("preflight: present:"))
    assert " torch" in present and " nvcc" in present, present
    assert "-m tests.kernels_gpu_checks --only kernels" in out
    assert "-m tests.kernels_gpu_checks --only aot" in out
    assert "scripts/bench_eca_kernels.py" in out
    assert "skip pytest -m gpu (TensorRT plugin and build tests) and the host execution of the kernels: pytest or " \
           "the CLI's dependencies are missing" in out  # fmt: skip
    assert "would run: timeout" in out and "-m pytest" not in out and "eca_deploy.cli" not in out
    assert _snapshot(root) == before, "the dry run wrote into the checkout"


@pytest.mark.parametrize("target", ["tests.kernels_gpu_checks", "scripts/bench_eca_kernels.py"])
def test_kernel_steps_import_without_the_cli_dependencies(tmp_path: Path, target: str) -> None:
    """What the acceptance script runs on the bare machine imports there (they stop at the missing GPU)."""
    root = SCRIPT.parents[1]
    env = {**os.environ, **_bare_env(tmp_path)}
    env["PYTHONPATH"] += os.pathsep + str(root)
    args = ["-m", target] if not target.endswith(".py") else [str(root / target)]
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=root, timeout=120,
                          check=False)  # fmt: skip
    assert "ModuleNotFoundError" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2 and done.stderr.startswith("error: needs a CUDA GPU"), done.stderr


def test_benchmark_rotates_past_l2_and_rotates_the_round_order() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench", SCRIPT.parent / "bench_eca_kernels.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    l2 = 50 << 20  # H100
    for set_bytes in (16 * 112 * 112 * 2 * 2, 32 * 256 * 56 * 56 * 2 * 2, 2048 * 7 * 7 * 2 * 2):
        sets = bench.rotation_sets(set_bytes, l2)
        assert sets >= 2 and (sets - 1) * set_bytes >= 2 * l2, (set_bytes, sets)
    names = ["copy", "fused", "auto"]
    firsts = [bench.round_order(names, r)[0] for r in range(3)]
    assert sorted(firsts) == sorted(names), "every variant runs first in some round"
    assert all(sorted(bench.round_order(names, r)) == sorted(names) for r in range(5))

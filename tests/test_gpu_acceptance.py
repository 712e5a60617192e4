"""scripts/gpu_acceptance.sh: valid bash, and a one-line refusal where there is no GPU (the run itself needs one)."""

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
    """Every file of the checkout (not .git) with its size and modification time."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            stat = (Path(folder) / name).stat()
            found[os.path.relpath(Path(folder) / name, root)] = (stat.st_size, stat.st_mtime_ns)
    return found


def _dry_run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run([str(SCRIPT), "--dry-run", *args], capture_output=True, text=True, check=False,
                          timeout=120, env=environ)  # fmt: skip


@pytest.mark.parametrize(
    ("profile", "needles"),
    [("host", ["would run: timeout", "tests/test_kernels_host.py"]),
     ("pip-trt", ["skip C++ TensorRT plugin and tests/test_plugin_tensorrt.py: no TensorRT headers",
                  "--ignore=tests/test_plugin_tensorrt.py", "no C++ library"]),
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
    for name in ("build", "GPU tests", "host execution of the kernels", "kernel benchmark"):
        assert f"skip {name}: the time budget (TIME_LIMIT={limit}s) is spent" in done.stdout


def test_profile_is_checked() -> None:
    done = _dry_run("--profile", "windows")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --profile takes host, pip-trt or jetpack6"

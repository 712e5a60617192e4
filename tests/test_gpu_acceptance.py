"""scripts/gpu_acceptance.sh: valid bash, and a one-line refusal where there is no GPU (the run itself needs one)."""

from __future__ import annotations

import os
import shutil
import subprocess
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

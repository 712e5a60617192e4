"""The test suite's own xdist scheduler (tests/conftest.py): a worker that dies mid-run ends the run with that one
test failed and every other test run once, instead of a hang (pytest-xdist 3.8's loadscope requeues finished work)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("xdist")

CHECKOUT = Path(__file__).resolve().parents[1]


def test_a_crashed_worker_fails_its_test_and_the_run_goes_on(tmp_path: Path) -> None:
    quick = "\n".join(f"def test_quick_{i}():\n    pass\n" for i in range(12))
    (tmp_path / "test_first.py").write_text(quick)
    (tmp_path / "test_dies.py").write_text(
        "import os\n\n" + quick + "\ndef test_dies():\n    os._exit(3)\n\n\ndef test_after():\n    pass\n"
    )
    (tmp_path / "test_last.py").write_text(quick)
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert re.search(r"\b1 failed, 37 passed\b", summary), done.stdout[-3000:]
    assert "test_dies" in done.stdout

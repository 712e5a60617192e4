"""The set-up's PyTorch source: PyTorch's CPU index where reachable, the plain name where not (`make -n`)."""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def dry_run(target: str, tmp_path: Path, index: str) -> str:
    """The commands `make TARGET` would run for fresh venvs under tmp_path (nothing is installed)."""
    args = ["make", "-n", "-C", str(ROOT), target, f"VENV={tmp_path / 'venv'}", f"TEST_VENV={tmp_path / 'venv-test'}",
            f"TORCH_INDEX={index}"]  # fmt: skip
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout


@pytest.fixture
def reachable_index(tmp_path: Path):
    """A local HTTP server with a `torch/` page, standing in for https://download.pytorch.org/whl/cpu."""
    (tmp_path / "index" / "torch").mkdir(parents=True)
    (tmp_path / "index" / "torch" / "index.html").write_text("<html></html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "index"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_reachable_index_is_used(tmp_path: Path, reachable_index: str) -> None:
    demo = dry_run("setup", tmp_path, reachable_index)
    assert f'scripts/pip_install.py -q --index-url {reachable_index} "torch==2.13.0"' in demo
    test = dry_run("setup-test", tmp_path, reachable_index)
    assert f'--index-url {reachable_index} \\\n    "torch==2.14.1" "torchvision==0.29.1"' in test
    # timm and ultralytics install with torch/torchvision pinned; cv2 is checked after ultralytics' opencv-python
    assert "-c " in test and '-e ".[dev,timm,openvino,ultralytics$(' in test
    assert 'import onnxruntime" 2>/dev/null || echo ,cpu)]"' in test  # ONNX Runtime in the same pip run
    assert "import cv2" in test and "opencv-python-headless==" in test


def test_unreachable_index_falls_back_to_the_plain_name(tmp_path: Path) -> None:
    demo = dry_run("setup", tmp_path, "http://127.0.0.1:9")  # discard port: nothing listens
    assert "--index-url" not in demo and '"torch==2.13.0"' in demo
    assert 'echo "pip install  torch==2.13.0"' in demo  # the resolved command is shown


def test_jetson_flags_reach_the_venv(tmp_path: Path) -> None:
    args = ["make", "-n", "-C", str(ROOT), "setup", f"VENV={tmp_path / 'venv'}", "VENV_FLAGS=--system-site-packages",
            "TORCH_INDEX=http://127.0.0.1:9"]  # fmt: skip
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout
    assert f"-m venv --system-site-packages {tmp_path / 'venv'}" in out


def test_every_install_goes_through_the_installer(tmp_path: Path) -> None:
    """uv where it installs (scripts/pip_install.py), pip otherwise: no package install bypasses the installer."""
    for target in ("setup", "setup-test"):
        out = dry_run(target, tmp_path, "http://127.0.0.1:9")
        assert "-m pip install -q uv ||" in out  # a venv that cannot get uv still installs, with pip
        installs = [line for line in out.splitlines() if "pip install" in line and "echo" not in line.split("||")[0]]
        others = [line for line in installs if "scripts/pip_install.py" not in line]
        assert all("--upgrade pip" in line or "pip install -q uv ||" in line for line in others), others

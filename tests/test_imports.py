"""The package's import structure: no import cycles, and the light entry points import no heavy package.

Cycles are counted by scripts/code_metrics.py, reading the sources: every import of the package's own modules,
a function-local one included (it only hides a cycle at import time). The heavy packages are checked in a fresh
interpreter, where `sys.modules` shows what an import really loaded.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "onnxruntime", "openvino", "tensorrt", "timm", "ultralytics", "cupy", "onnx")

# Modules that work without torch (a Jetson with TensorRT only; `eca-deploy plugin ...`; serving configs).
TORCH_FREE = (
    "eca_deploy.engine.build",
    "eca_deploy.engine.sidecar",
    "eca_deploy.exporters.metadata",
    "eca_deploy.pipeline.build",
    "eca_deploy.pipeline.quantize",
    "eca_deploy.plugin.info",
    "eca_deploy.plugin.qdp",
    "eca_deploy.serving.spec",
    "eca_deploy.serving.triton",
)


def _code_metrics() -> ModuleType:
    spec = importlib.util.spec_from_file_location("code_metrics", ROOT / "scripts" / "code_metrics.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _loaded(*modules: str) -> set[str]:
    """Top-level packages in sys.modules after importing `modules` in a fresh interpreter."""
    code = "import importlib, json, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\n"
    code += "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    done = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def test_cycle_finder_finds_a_cycle() -> None:
    metrics = _code_metrics()
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert metrics.cycles(graph) == [["a", "b", "c"]]
    assert metrics.cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    found = _code_metrics().measure()
    assert found["cycles_top_imports"] == []
    cycles = found["cycles_all_imports"]
    assert cycles == [], f"import cycles (a lower-level module imports a higher one): {cycles}"


def test_the_package_imports_no_api_at_import_time() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, eca_deploy; print(sorted(m for m in sys.modules if 'eca_deploy' in m))"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    assert "eca_deploy.api" not in loaded and "eca_deploy.exporters" not in loaded


@pytest.mark.parametrize("module", ["eca_deploy.cli.main", "eca_deploy"])
def test_cli_startup_imports_no_heavy_package(module: str) -> None:
    heavy = _loaded(module) & set(HEAVY)
    assert heavy == set(), f"importing {module} loads {sorted(heavy)}: import them inside the command that needs them"


def test_torch_free_modules() -> None:
    assert "numpy" in _loaded("eca_deploy.pipeline.build")  # the check sees what an import loads
    loaded = _loaded(*TORCH_FREE)
    assert "torch" not in loaded and "timm" not in loaded and "ultralytics" not in loaded

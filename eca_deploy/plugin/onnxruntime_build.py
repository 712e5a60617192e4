"""Build and find the ONNX Runtime ECA custom-op library (plugins/onnxruntime): CMake and a C++ compiler only.

The library needs no ONNX Runtime headers or libraries to build (plugins/onnxruntime/ort_abi.h) and works with
ONNX Runtime 1.16 and newer (1.17+ for its multi-threading); `register` loads it into a session's options.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eca_deploy.errors import EcaDeployError
from eca_deploy.plugin.cmake_build import Progress, find_library, project_dir, run_cmake
from eca_deploy.plugin.cmake_build import default_build_dir as cmake_default_build_dir

OP_LIBRARY = "libeca_onnxruntime_op.so"
OP_LIBRARY_ENV = "ECA_DEPLOY_ONNXRUNTIME_OP"
OP_LIBRARY_OFF = "off"  # the variable's value that turns the library off (the ONNX function runs)
MIN_ONNXRUNTIME = (1, 16)


@dataclass
class OnnxRuntimeBuildResult:
    build_dir: Path
    library: Path
    seconds: float
    log: Path

    def as_dict(self) -> dict[str, object]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}


def source_dir() -> Path | None:
    """plugins/onnxruntime when eca-deploy runs from a checkout, else None."""
    return project_dir("onnxruntime")


def default_build_dir() -> Path:
    """<checkout>/build/onnxruntime, or build/onnxruntime under the current folder for an installed package."""
    return cmake_default_build_dir("onnxruntime")


def build_onnxruntime_op(
    build_dir: Path | None = None, jobs: int | None = None, progress: Progress | None = None
) -> OnnxRuntimeBuildResult:
    """Configure and build libeca_onnxruntime_op.so; one-line EcaDeployError on any failure."""
    sources = source_dir()
    if sources is None:
        raise EcaDeployError("the custom-op sources (plugins/onnxruntime) are not here: build from a checkout")
    build_dir = (build_dir or default_build_dir()).resolve()
    start = time.monotonic()
    library = run_cmake(sources, build_dir, [], jobs, progress, "ONNX Runtime custom-op library", OP_LIBRARY)
    return OnnxRuntimeBuildResult(build_dir, library, round(time.monotonic() - start, 1), build_dir / "eca-build.log")


def find_onnxruntime_op(path: str | Path | None = None, required: bool = True) -> Path | None:
    """The library from `path` (file or folder), $ECA_DEPLOY_ONNXRUNTIME_OP, or build/onnxruntime.

    A path or variable that names a missing file is an error; `required=False` only allows finding nothing.
    $ECA_DEPLOY_ONNXRUNTIME_OP=off: never a library, unless `path` names one (None, even with `required`).
    """
    if path is None and os.environ.get(OP_LIBRARY_ENV, "").strip().lower() == OP_LIBRARY_OFF:
        return None
    hint = "eca-deploy plugin build --target onnxruntime"
    return find_library(OP_LIBRARY, OP_LIBRARY_ENV, default_build_dir(), hint, path, required)


def supported(onnxruntime_version: str) -> bool:
    """Whether this ONNX Runtime version can load the library (1.16 or newer)."""
    try:
        major, minor = (int(part) for part in onnxruntime_version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= MIN_ONNXRUNTIME


def register(options: Any, library: Path) -> str | None:
    """Register the library in ONNX Runtime SessionOptions; None, or why it could not be loaded (one line)."""
    import onnxruntime

    if not supported(onnxruntime.__version__):
        return f"ONNX Runtime {onnxruntime.__version__} is older than 1.16"
    try:
        options.register_custom_ops_library(str(library))
    except Exception as exc:  # ORT raises its own exception types (Fail, RuntimeException)
        return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return None

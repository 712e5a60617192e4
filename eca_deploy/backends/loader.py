"""Open the right runner for a model file: an ONNX model on ONNX Runtime, or a TensorRT engine."""

from __future__ import annotations

from pathlib import Path

from eca_deploy.backends.base import Runner
from eca_deploy.errors import EcaDeployError


def open_onnx(path: Path, provider: str = "cpu", threads: int | None = None, optimize: bool = True) -> Runner:
    from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner
    from eca_deploy.onnx_io import load_onnx

    load_onnx(path, load_external_data=False)  # one-line errors for missing / non-ONNX files
    return OnnxRuntimeRunner(path, provider, threads=threads, optimize=optimize)


def open_engine(path: Path, plugin: str | None = None) -> Runner:
    if not path.is_file():
        raise EcaDeployError(f"engine file {path} does not exist: build one with eca-deploy build")
    if looks_like_onnx(path):
        raise EcaDeployError(f"{path} is an ONNX model, not a TensorRT engine: pass it with --onnx")
    from eca_deploy.backends.tensorrt_runner import TensorRTRunner

    return TensorRTRunner(path, plugin=plugin)


def looks_like_onnx(path: Path) -> bool:
    if path.suffix == ".onnx":
        return True
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not parseable as ONNX: fine, it may be an engine
        return False
    return bool(model.graph.node)

"""Open the right runner for a model file: an ONNX model on ONNX Runtime or OpenVINO, or a TensorRT engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eca_deploy.backends.base import Runner
from eca_deploy.errors import EcaDeployError

RUNTIMES = ("onnxruntime", "openvino")  # what runs an ONNX model (--runtime)


def open_onnx(
    path: Path, provider: str = "cpu", threads: int | None = None, qdq_arithmetic: bool = False,
    runtime: str = "onnxruntime",
) -> tuple[Runner, Any, str]:  # fmt: skip
    """(runner, onnx.ModelProto, precision) of an ONNX file; one-line errors for missing or non-ONNX files.

    `qdq_arithmetic` runs a Q/DQ (INT8) model with graph optimisations off, as plain quantize/dequantize
    arithmetic: what TensorRT computes, where ORT's optimiser would substitute its own int8 kernels.
    `runtime` "openvino" runs it on OpenVINO's CPU plugin (with the ECA extension for fused models) instead.
    """
    from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner
    from eca_deploy.onnx_io import load_onnx
    from eca_deploy.precision.detect import detect_precision

    if runtime not in RUNTIMES:
        raise EcaDeployError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    model = load_onnx(path)
    precision = detect_precision(model)
    if runtime == "openvino":
        if provider != "cpu":
            raise EcaDeployError(f"--provider {provider} is an ONNX Runtime option: OpenVINO runs on the CPU here")
        from eca_deploy.backends.openvino_runner import OpenVINORunner

        return OpenVINORunner(path, threads=threads), model, precision
    optimize = not (qdq_arithmetic and precision == "int8")
    return OnnxRuntimeRunner(path, provider, threads=threads, optimize=optimize), model, precision


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

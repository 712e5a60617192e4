"""Import TensorRT lazily, and say in one line what to install when it or a GPU is missing."""

from __future__ import annotations

from typing import Any

from eca_deploy.errors import MissingDependencyError

INSTALL_HINT = (
    "pip install 'eca-deploy[gpu]' (TensorRT 10.3 or newer) on a machine with an NVIDIA GPU; on Jetson it comes "
    "with JetPack"
)


def import_tensorrt() -> Any:
    """The `tensorrt` module, or a MissingDependencyError naming what to install."""
    try:
        import tensorrt
    except ImportError:
        raise MissingDependencyError(
            f"TensorRT is not installed: {INSTALL_HINT}; FP16/INT8 ONNX models are made and checked without it "
            "(eca-deploy convert / quantize / check)"
        ) from None
    except OSError as exc:  # the wheel is there but libnvinfer or CUDA cannot be loaded
        raise MissingDependencyError(f"TensorRT cannot load its libraries ({exc}): {INSTALL_HINT}") from None
    return tensorrt


def trt_version(trt: Any) -> tuple[int, ...]:
    """(major, minor, patch) of the imported TensorRT."""
    parts = []
    for piece in str(trt.__version__).split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def create_builder(trt: Any, logger: Any) -> Any:
    """trt.Builder, or a one-line error when TensorRT finds no usable CUDA GPU."""
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # TensorRT raises RuntimeError/TypeError variants when CUDA is unusable
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise MissingDependencyError(
            f"TensorRT {trt.__version__} found no usable CUDA GPU ({first}): building engines needs an NVIDIA GPU "
            "with a working driver"
        ) from None
    if builder is None:
        raise MissingDependencyError(
            f"TensorRT {trt.__version__} found no usable CUDA GPU: building engines needs an NVIDIA GPU with a "
            "working driver"
        )
    return builder

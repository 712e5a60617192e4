"""Reading and writing ONNX files with one-line errors and atomic writes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from eca_deploy.errors import EcaDeployError
from eca_deploy.fileio import atomic_write

if TYPE_CHECKING:  # onnx is imported when a model is read or written: `eca-deploy --help` imports this module
    import onnx


def load_onnx(path: str | Path, load_external_data: bool = True) -> onnx.ModelProto:
    import onnx

    path = Path(path)
    if not path.is_file():
        raise EcaDeployError(f"ONNX file {path} does not exist: check the path")
    try:
        model = onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:  # protobuf raises DecodeError, onnx raises various errors on bad files
        raise EcaDeployError(
            f"{path} is not an ONNX model (protobuf cannot parse it: {type(exc).__name__}): "
            "pass an .onnx file, e.g. one written by eca-deploy export"
        ) from None
    if not model.graph.node:
        raise EcaDeployError(f"{path} is not an ONNX model (no graph: empty, truncated or another kind of file)")
    return model


def check_model(model: onnx.ModelProto, label: str = "the ONNX model") -> None:
    """onnx.checker full check (with strict shape inference); one-line error when it fails."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise EcaDeployError(f"{label} fails onnx.checker: {first}") from None


def save_onnx(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write `model` atomically (a failed write leaves any existing file untouched)."""
    import onnx

    return atomic_write(path, lambda tmp: onnx.save(model, str(tmp)))

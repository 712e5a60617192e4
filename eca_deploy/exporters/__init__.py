"""PyTorch -> ONNX export with metadata, followed by verification against PyTorch.

The names below load on first use: the package's light modules (`metadata`, `model_metadata`,
`foreign_metadata`) are read by stages that must work without torch.
"""

from typing import Any

__all__ = ["ExportOptions", "VerifyReport", "export_onnx", "verify_onnx"]


def __getattr__(name: str) -> Any:
    if name in ("ExportOptions", "export_onnx"):
        from eca_deploy.exporters import onnx_export

        return getattr(onnx_export, name)
    if name in ("VerifyReport", "verify_onnx"):
        from eca_deploy.exporters import verify

        return getattr(verify, name)
    raise AttributeError(f"module 'eca_deploy.exporters' has no attribute {name!r}")

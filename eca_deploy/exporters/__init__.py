"""PyTorch -> ONNX export with metadata, followed by verification against PyTorch."""

from eca_deploy.exporters.onnx_export import ExportOptions, export_onnx
from eca_deploy.exporters.verify import VerifyReport, verify_onnx

__all__ = ["ExportOptions", "VerifyReport", "export_onnx", "verify_onnx"]

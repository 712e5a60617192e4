"""Verify an exported ONNX model against its PyTorch source on real photographs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner
from eca_deploy.backends.torch_runner import TorchRunner
from eca_deploy.data.images import ImageBatch
from eca_deploy.metrics import FP32_TOLERANCE, Agreement, Tolerance, compare


@dataclass(frozen=True)
class VerifyReport:
    agreement: Agreement
    failures: list[str]
    image_names: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures


def verify_onnx(
    model: nn.Module,
    onnx_model: str | Path | bytes,
    images: ImageBatch,
    batch: int | None = None,
    tolerance: Tolerance = FP32_TOLERANCE,
) -> VerifyReport:
    """Run PyTorch and ONNX Runtime (CPU) on the same images; `batch` fixes the ONNX batch size if static."""
    runner = OnnxRuntimeRunner(onnx_model, "cpu")
    step = batch or 4
    out = runner.run_all(images.array, step, fixed_batch=batch is not None)
    ref = TorchRunner(model).run_all(images.array, step)
    agreement = compare(ref, out)
    return VerifyReport(agreement, tolerance.failures(agreement, float(np.abs(ref).max())), images.names)

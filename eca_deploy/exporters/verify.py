"""Verify an exported ONNX model against its PyTorch source on real photographs, on every output."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner
from eca_deploy.backends.torch_runner import TorchRunner
from eca_deploy.data.images import ImageBatch
from eca_deploy.interface import outputs_from_tensors
from eca_deploy.metrics import FP32_TOLERANCE, Agreement, OutputCheck, Tolerance, compare_outputs, named_failures


@dataclass(frozen=True)
class VerifyReport:
    outputs: dict[str, OutputCheck]
    failures: list[str]
    image_names: list[str]
    kinds: Mapping[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def agreement(self) -> Agreement:
        """The worst output's agreement (a classifier's only output: its logits)."""
        return min(self.outputs.values(), key=lambda c: (c.passed, c.agreement.cosine_min)).agreement


def verify_onnx(
    model: nn.Module,
    onnx_model: str | Path | bytes,
    images: ImageBatch,
    batch: int | None = None,
    tolerance: Tolerance = FP32_TOLERANCE,
    kinds: Mapping[str, str] | None = None,
) -> VerifyReport:
    """Run PyTorch and ONNX Runtime (CPU) on the same images and judge every output; `batch`: static ONNX batch."""
    runner = OnnxRuntimeRunner(onnx_model, "cpu")
    names = [o.name for o in runner.outputs]
    if kinds is None:
        kinds = {o.name: o.kind for o in outputs_from_tensors(runner.outputs)}
    step = batch or 4
    out = runner.run_all(images.array, step, fixed_batch=batch is not None)
    ref = TorchRunner(model, output_names=names).run_all(images.array, step)
    checks = compare_outputs(ref, out, kinds, tolerance)
    return VerifyReport(checks, named_failures(checks), images.names, dict(kinds))

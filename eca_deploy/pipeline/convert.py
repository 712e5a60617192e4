"""`convert --fp16`: an FP16 ONNX next to the FP32 one, checked against it on real photographs (CPU)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from eca_deploy.errors import CheckFailedError, EcaDeployError
from eca_deploy.metrics import Agreement, Tolerance, compare
from eca_deploy.precision.fp16 import Fp16Report


@dataclass
class PrecisionCheck:
    """How the converted model's logits follow the FP32 model's on the same images (ONNX Runtime, CPU)."""

    agreement: Agreement
    failures: list[str]
    image_names: list[str]
    reference_scale: float

    def as_dict(self) -> dict[str, Any]:
        a = self.agreement.as_dict()
        a["worst_images"] = [self.image_names[i] for i in self.agreement.worst_images]
        return {"against": "fp32 onnx", **a, "passed": not self.failures, "failures": self.failures}


def compare_with_fp32(
    fp32: onnx.ModelProto, other: onnx.ModelProto, images: Path | None, tolerance: Tolerance, qdq: bool = False
) -> PrecisionCheck:
    """Run both models on the same photographs (the sample photos, or a folder) and compare their logits.

    Q/DQ models run with ONNX Runtime's graph optimisations off: plain quantize/dequantize arithmetic, as
    TensorRT computes it (ORT's fused int8 kernels give different results).
    """
    from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner
    from eca_deploy.data.images import list_images, load_images
    from eca_deploy.precision.quantize import model_preprocessing

    prep = model_preprocessing(fp32, lambda _m: None)
    loaded = load_images(list_images(images) if images else None, prep, limit=64)
    ref_runner = OnnxRuntimeRunner(fp32.SerializeToString(), "cpu")
    runner = OnnxRuntimeRunner(other.SerializeToString(), "cpu", optimize=not qdq)
    fixed = ref_runner.inputs[0].shape[0]
    batch = fixed if isinstance(fixed, int) else 16
    ref = ref_runner.run_all(loaded.array, batch, fixed_batch=isinstance(fixed, int))
    out = runner.run_all(loaded.array, batch, fixed_batch=isinstance(fixed, int)).astype(np.float32)
    agreement = compare(ref, out)
    scale = float(np.abs(ref).max())
    return PrecisionCheck(agreement, tolerance.failures(agreement, scale), loaded.names, scale)


@dataclass
class ConvertResult:
    source: Path
    output: Path
    report: Fp16Report
    keep_io_types: bool
    check: PrecisionCheck | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "output": str(self.output),
            "precision": "fp16",
            "io_types": "float32" if self.keep_io_types else "float16",
            **self.report.as_dict(),
            "check": self.check.as_dict() if self.check else None,
        }


def convert_model(
    model: onnx.ModelProto, keep_io_types: bool = True, keep_fp32_ops: Sequence[str] = (),
    warn: Callable[[str], None] = lambda _m: None,
) -> tuple[onnx.ModelProto, Fp16Report]:  # fmt: skip
    """FP16 copy of an FP32 model (one-line errors for models that are not FP32)."""
    from eca_deploy.fusion import count_eca_nodes
    from eca_deploy.fusion.fuse import default_opset
    from eca_deploy.onnx_io import check_model
    from eca_deploy.ops.onnx_function import CASTLIKE_OPSET
    from eca_deploy.precision.detect import detect_precision
    from eca_deploy.precision.fp16 import convert_to_fp16

    precision = detect_precision(model)
    if precision != "fp32":
        raise EcaDeployError(f"the model is already {precision.upper()}: convert the FP32 model it came from")
    if count_eca_nodes(model) and default_opset(model) < CASTLIKE_OPSET:
        warn(
            f"opset {default_opset(model)} < {CASTLIKE_OPSET}: the fused ECA nodes stay in float32 (their ONNX "
            "function takes float16 from opset 15); export with --opset 17 to run them in float16"
        )
    converted, report = convert_to_fp16(model, keep_io_types=keep_io_types, keep_fp32_ops=keep_fp32_ops)
    check_model(converted, "the FP16 model")
    if report.clipped_initializers:
        warn(f"{len(report.clipped_initializers)} weights exceed the float16 range and were clipped to +-65504")
    return converted, report


def run_convert(
    source: Path,
    output: Path,
    keep_io_types: bool = True,
    keep_fp32_ops: Sequence[str] = (),
    verify: bool = True,
    images: Path | None = None,
    warn: Callable[[str], None] = lambda _m: None,
) -> ConvertResult:
    """Convert, compare with the FP32 model on real photographs, and write atomically if within tolerance."""
    from eca_deploy.fileio import claim_output_file
    from eca_deploy.onnx_io import load_onnx, save_onnx
    from eca_deploy.pipeline.check import DEFAULT_TOLERANCES

    model = load_onnx(source)
    claim_output_file(output, "--output", [source, images])
    converted, report = convert_model(model, keep_io_types, keep_fp32_ops, warn)
    check = compare_with_fp32(model, converted, images, DEFAULT_TOLERANCES["fp16"]) if verify else None
    if check is not None and check.failures:
        raise CheckFailedError(f"the FP16 model disagrees with the FP32 one ({'; '.join(check.failures)}): "
                               f"{output} not written")  # fmt: skip
    save_onnx(converted, output)
    return ConvertResult(source, output, report, keep_io_types, check)

"""`convert --fp16`: an FP16 ONNX next to the FP32 one, checked against it on real photographs (CPU)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner
from eca_deploy.data.images import Preprocessing, list_images, load_images
from eca_deploy.errors import CheckFailedError, EcaDeployError
from eca_deploy.exporters.metadata import onnx_interface
from eca_deploy.fileio import claim_output_file
from eca_deploy.fusion import count_eca_nodes
from eca_deploy.fusion.fuse import default_opset
from eca_deploy.interface import ModelInterface
from eca_deploy.metrics import Agreement, OutputCheck, Tolerance, compare_outputs, named_failures
from eca_deploy.onnx_io import check_model, load_onnx, save_onnx
from eca_deploy.ops.onnx_function import CASTLIKE_OPSET
from eca_deploy.pipeline.check import DEFAULT_TOLERANCES, detections_decide, judge_detector
from eca_deploy.precision.detect import detect_precision
from eca_deploy.precision.fp16 import Fp16Report, convert_to_fp16


@dataclass
class PrecisionCheck:
    """How every output of the converted model follows the FP32 model's on the same images (ONNX Runtime, CPU)."""

    checks: dict[str, OutputCheck]
    failures: list[str]
    image_names: list[str]
    reference_scale: float
    size: tuple[int, int] | None = None
    detection: Any = None  # a detector's DetectionCheck (detection.judge), None otherwise
    preprocessing: str | None = None  # Preprocessing.describe() of the images both models ran on

    @property
    def agreement(self) -> Agreement:
        """The first failing output's, else the logits', else the first output's agreement."""
        checks = list(self.checks.values())
        return (
            next((c for c in checks if not c.passed), None)
            or next((c for c in checks if c.kind == "logits"), checks[0])
        ).agreement

    def as_dict(self) -> dict[str, Any]:
        a = self.agreement.as_dict()
        a["worst_images"] = [self.image_names[i] for i in self.agreement.worst_images]
        return {
            "against": "fp32 onnx",
            **a,
            "passed": not self.failures,
            "failures": self.failures,
            "input_size": list(self.size) if self.size else None,
            "preprocessing": self.preprocessing,
            "outputs": {n: c.as_dict(self.image_names) for n, c in self.checks.items()},
            "detection": None if self.detection is None else self.detection.as_dict(self.image_names),
        }


def compare_with_fp32(
    fp32: onnx.ModelProto,
    other: onnx.ModelProto,
    images: Path | None,
    tolerance: Tolerance,
    qdq: bool = False,
    interface: ModelInterface | None = None,
    precision: str = "fp32",
) -> PrecisionCheck:
    """Run both models on the same photographs (the sample photos, or a folder) and compare every output.

    Q/DQ models run with ONNX Runtime's graph optimisations off: plain quantize/dequantize arithmetic, as
    TensorRT computes it (ORT's fused int8 kernels give different results). `interface` (default: the FP32
    model's own) gives the input size, preprocessing and output kinds; a detector (interface.detection) is
    judged by its detections too, with `precision`'s bounds.
    """
    interface = interface or onnx_interface(fp32, label="the FP32 model")
    loaded = load_images(list_images(images) if images else None, interface.preprocessing, limit=64)
    ref_runner = OnnxRuntimeRunner(fp32.SerializeToString(), "cpu")
    runner = OnnxRuntimeRunner(other.SerializeToString(), "cpu", optimize=not qdq)
    fixed = ref_runner.inputs[0].shape[0]
    batch = fixed if isinstance(fixed, int) else 16
    ref = ref_runner.run_all(loaded.array, batch, fixed_batch=isinstance(fixed, int))
    out = {k: v.astype(np.float32) for k, v in runner.run_all(loaded.array, batch, isinstance(fixed, int)).items()}

    checks = compare_outputs(ref, out, interface.kinds, tolerance, interface.detection)
    scale = max(c.reference_scale for c in checks.values())
    detected = judge_detector(ref, out, interface, precision)
    checks = detections_decide(checks, detected)
    failures = named_failures(checks) + (detected.named_failures() if detected is not None else [])
    return PrecisionCheck(
        checks, failures, loaded.names, scale, interface.size, detected, interface.preprocessing.describe()
    )


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
    model: onnx.ModelProto,
    keep_io_types: bool = True,
    keep_fp32_ops: Sequence[str] = (),
    warn: Callable[[str], None] = lambda _m: None,
) -> tuple[onnx.ModelProto, Fp16Report]:
    """FP16 copy of an FP32 model (one-line errors for models that are not FP32)."""
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
    img_size: tuple[int, int] | None = None,
    adjust: Callable[[Preprocessing], Preprocessing] | None = None,
) -> ConvertResult:
    """Convert, compare with the FP32 model on real photographs, and write atomically if within tolerance.

    The comparison runs at the model's size (its static H/W or metadata), else `img_size` (--img-size).
    """
    model = load_onnx(source)
    claim_output_file(output, "--output", [source, images])
    interface = onnx_interface(model, label=str(source), img_size=img_size, warn=warn, adjust=adjust)
    converted, report = convert_model(model, keep_io_types, keep_fp32_ops, warn)
    check = None
    if verify:
        check = compare_with_fp32(
            model, converted, images, DEFAULT_TOLERANCES["fp16"], interface=interface, precision="fp16"
        )
    if check is not None and check.failures:
        raise CheckFailedError(
            f"the FP16 model disagrees with the FP32 one ({'; '.join(check.failures)}): {output} not written"
        )
    save_onnx(converted, output)
    return ConvertResult(source, output, report, keep_io_types, check)

"""`quantize`: calibrate on real images, write a Q/DQ ONNX for TensorRT, compare it with FP32 on the CPU."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eca_deploy.pipeline.convert import PrecisionCheck
from eca_deploy.precision.quantize import QuantizeOptions, QuantizeReport

# The Q/DQ model is compared with FP32 and reported; a wide miss is a warning, not a failure: INT8 accuracy
# is judged on labelled data (docs/precision.md), and a random network's logits are too close for top-1.
LOW_COSINE = 0.9


@dataclass
class QuantizeResult:
    source: Path
    output: Path
    report: QuantizeReport
    check: PrecisionCheck | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "output": str(self.output),
            "precision": "int8",
            **self.report.as_dict(),
            "check": self.check.as_dict() if self.check else None,
        }


def run_quantize(
    source: Path,
    calib_images: Path,
    output: Path,
    options: QuantizeOptions = QuantizeOptions(),
    verify: bool = True,
    images: Path | None = None,
    warn: Callable[[str], None] = lambda _m: None,
    progress: Callable[[int, int], None] | None = None,
) -> QuantizeResult:
    from eca_deploy.fileio import check_writable, sha256_file
    from eca_deploy.metrics import Tolerance
    from eca_deploy.onnx_io import check_model, load_onnx, save_onnx
    from eca_deploy.pipeline.convert import compare_with_fp32
    from eca_deploy.precision.quantize import quantize_model

    model = load_onnx(source)
    check_writable(output)
    options.validate()
    quantized, report = quantize_model(model, calib_images, sha256_file(source), options, warn, progress)
    check_model(quantized, "the Q/DQ model")
    check = None
    if verify:
        check = compare_with_fp32(model, quantized, images, Tolerance(float("inf"), LOW_COSINE, 0.0), qdq=True)
        if check.failures:
            warn(f"the INT8 model strays far from FP32 on the check images ({'; '.join(check.failures)}): "
                 "calibrate with more, more representative images, or try another --method")  # fmt: skip
    save_onnx(quantized, output)
    return QuantizeResult(source, output, report, check)

"""`quantize`: calibrate on real images, write a Q/DQ ONNX for TensorRT, compare it with FP32 on the CPU."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eca_deploy.data.images import Preprocessing
from eca_deploy.exporters.metadata import onnx_interface
from eca_deploy.fileio import claim_output_file, sha256_file
from eca_deploy.onnx_io import check_model, load_onnx, save_onnx
from eca_deploy.pipeline.check import DEFAULT_TOLERANCES
from eca_deploy.pipeline.convert import PrecisionCheck, compare_with_fp32
from eca_deploy.precision.quantize import QuantizeOptions, QuantizeReport, quantize_model

# The Q/DQ model is judged against the FP32 model with the same INT8 tolerance as `check` and `deploy`
# (pipeline.check.DEFAULT_TOLERANCES); outside it, the model is written only on request, marked as failed.
FAILED_KEY = "eca_deploy.quantize_check"  # metadata of a model kept although outside tolerance


@dataclass
class QuantizeResult:
    source: Path
    output: Path
    report: QuantizeReport
    check: PrecisionCheck | None
    written: bool = True
    input_size: tuple[int, int] | None = None  # H, W of calibration and verification

    @property
    def passed(self) -> bool:
        return self.check is None or not self.check.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "output": str(self.output),
            "precision": "int8",
            **self.report.as_dict(),
            "check": self.check.as_dict() if self.check else None,
            "input_size": list(self.input_size) if self.input_size else None,
            "passed": self.passed,
            "written": self.written,
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
    keep_failed: bool = False,
    img_size: tuple[int, int] | None = None,
    adjust: Callable[[Preprocessing], Preprocessing] | None = None,
) -> QuantizeResult:
    """Quantize and judge against FP32; outside tolerance nothing is written unless `keep_failed`.

    Calibration and verification share one interface: the model's size (static H/W, metadata) or `img_size`.
    """
    model = load_onnx(source)
    claim_output_file(output, "--output", [source, calib_images, images])
    options.validate()
    interface = onnx_interface(model, label=str(source), img_size=img_size, warn=warn, adjust=adjust)
    prep = interface.preprocessing
    quantized, report = quantize_model(
        model, calib_images, sha256_file(source), options, warn, progress, preprocessing=prep
    )
    check_model(quantized, "the Q/DQ model")
    check = None
    if verify:
        check = compare_with_fp32(
            model, quantized, images, DEFAULT_TOLERANCES["int8"], qdq=True, interface=interface, precision="int8"
        )
        if check.failures and not keep_failed:
            return QuantizeResult(source, output, report, check, written=False, input_size=interface.size)
        if check.failures:
            quantized.metadata_props.add(key=FAILED_KEY, value="failed: " + "; ".join(check.failures))
    save_onnx(quantized, output)
    return QuantizeResult(source, output, report, check, input_size=interface.size)

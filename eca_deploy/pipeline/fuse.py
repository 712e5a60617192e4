"""The fusion stage over files: load, fuse, check, compare against the unfused model, write atomically."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from eca_deploy.errors import CheckFailedError
from eca_deploy.fileio import check_writable
from eca_deploy.fusion import FusionReport, fuse_eca
from eca_deploy.onnx_io import check_model, load_onnx, save_onnx

# Fused and unfused float32 models compute the same ops; only summation order may differ.
FUSION_TOLERANCE = 1e-5


@dataclass
class FuseResult:
    source: Path
    output: Path
    report: FusionReport
    written: bool
    max_abs_diff: float | None
    nodes_before: int = 0  # nodes of the top-level graph before and after fusion
    nodes_after: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "source": str(self.source),
            "output": str(self.output) if self.written else None,
            **self.report.as_dict(),
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "max_abs_diff": self.max_abs_diff,
        }


def compare_fused(unfused: onnx.ModelProto, fused: onnx.ModelProto, images: np.ndarray | None = None) -> float:
    """Max abs difference of the two models' first outputs on real photographs, in ONNX Runtime (CPU)."""
    from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner
    from eca_deploy.data.images import Preprocessing, load_images
    from eca_deploy.exporters.metadata import read_metadata

    a = OnnxRuntimeRunner(unfused.SerializeToString(), "cpu")
    b = OnnxRuntimeRunner(fused.SerializeToString(), "cpu")
    if images is None:
        meta = read_metadata(unfused)
        prep = meta.preprocessing if meta else Preprocessing.for_size(_input_size(a))
        images = load_images(None, prep, limit=4).array
    fixed = a.inputs[0].shape[0]
    batch = fixed if isinstance(fixed, int) else len(images)
    out_a = a.run_all(images, batch, fixed_batch=isinstance(fixed, int))
    out_b = b.run_all(images, batch, fixed_batch=isinstance(fixed, int))
    return float(np.abs(out_a.astype(np.float64) - out_b).max())


def _input_size(runner: object) -> int:
    dims = runner.inputs[0].shape  # type: ignore[attr-defined]
    return dims[2] if isinstance(dims[2], int) else 224


def run_fuse(source: Path, output: Path, write_unchanged: bool = False, verify: bool = True) -> FuseResult:
    model = load_onnx(source)
    check_writable(output)
    unfused = onnx.ModelProto()
    unfused.CopyFrom(model)
    nodes_before = len(model.graph.node)
    report = fuse_eca(model)
    max_diff = None
    if report.count:
        check_model(model, "the fused model")
        if verify:
            max_diff = compare_fused(unfused, model)
            if max_diff > FUSION_TOLERANCE:
                raise CheckFailedError(
                    f"fused model differs from the unfused one by {max_diff:.3g} (> {FUSION_TOLERANCE}): "
                    f"{output} not written; please report this model"
                )
    written = bool(report.count) or write_unchanged
    if written:
        save_onnx(model, output)
    return FuseResult(source, output, report, written, max_diff, nodes_before, len(model.graph.node))

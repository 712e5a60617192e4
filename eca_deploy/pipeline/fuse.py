"""The fusion stage over files: load, fuse, check, compare against the unfused model, write atomically."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner
from eca_deploy.data.images import load_images
from eca_deploy.errors import CheckFailedError, EcaDeployError
from eca_deploy.exporters.metadata import onnx_interface
from eca_deploy.fileio import claim_output_file
from eca_deploy.fusion import FusionReport, fuse_eca
from eca_deploy.onnx_io import check_model, load_onnx, save_onnx

# Fused and unfused float32 models compute the same ops; only summation order may differ, and a deep model's
# own float32 rounding error grows with its depth and its logits. So the fused model is judged relative to each
# image's largest logit, against the larger of a fixed tolerance and a multiple of the unfused model's own
# float32 noise: the difference between two correct float32 evaluations of the unfused graph (ONNX Runtime
# with its graph optimisations, which reorder sums in fused kernels and a blocked layout, and without them).
FUSION_TOLERANCE = 1e-4  # relative: max |fused - unfused| / max(1, max |unfused logit|), per image
NOISE_FACTOR = 4.0


@dataclass(frozen=True)
class FusionCheck:
    """Fused against unfused on real photographs; `relative_*` are per-image maxima divided by max(1, |logit|)."""

    images: int
    max_abs_diff: float
    relative_diff: float
    float32_noise: float  # relative difference of two float32 evaluations of the unfused graph
    tolerance: float
    bound: float  # max(tolerance, NOISE_FACTOR * float32_noise)
    output: str = ""  # the output with the largest relative difference (every output is compared)
    per_output: dict[str, dict[str, float]] | None = None  # name -> max_abs_diff, relative_diff, float32_noise

    @property
    def passed(self) -> bool:
        return self.relative_diff <= self.bound

    def as_dict(self) -> dict[str, object]:
        return {
            "images": self.images,
            "max_abs_diff": self.max_abs_diff,
            "relative_diff": self.relative_diff,
            "float32_noise": self.float32_noise,
            "tolerance": self.tolerance,
            "noise_factor": NOISE_FACTOR,
            "bound": self.bound,
            "passed": self.passed,
            "worst_output": self.output,
            "outputs": self.per_output,
        }

    def refusal(self, output: Path | str, option: str = "--tolerance") -> str:
        which = f"output {self.output!r} of the " if self.per_output and len(self.per_output) > 1 else ""
        return (
            f"{which}fused model differs from the unfused one by {self.relative_diff:.3g} of the largest value "
            f"(max abs {self.max_abs_diff:.3g} on {self.images} photos), above the bound {self.bound:.3g} = "
            f"max({option} {self.tolerance:g}, {NOISE_FACTOR:g} x the unfused model's own float32 noise "
            f"{self.float32_noise:.3g}): {output} not written; if the fusion is right, pass a larger {option} "
            "(or --no-verify) and please report this model"
        )


@dataclass
class FuseResult:
    source: Path
    output: Path
    report: FusionReport
    written: bool
    max_abs_diff: float | None
    check: FusionCheck | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "source": str(self.source),
            "output": str(self.output) if self.written else None,
            **self.report.as_dict(),
            "max_abs_diff": self.max_abs_diff,
            "verification": self.check.as_dict() if self.check else None,
        }


def _check_images(unfused: onnx.ModelProto) -> np.ndarray:
    """Every sample photograph (one photo must not decide the verdict), preprocessed as the metadata says."""
    return load_images(None, onnx_interface(unfused, label="the unfused model").preprocessing).array


def _outputs(model: onnx.ModelProto, images: np.ndarray, optimize: bool = True) -> dict[str, np.ndarray]:
    # Never the native ECA kernel: the check judges the file's own ONNX function, which every runtime without the
    # custom-op library runs.
    runner = OnnxRuntimeRunner(model.SerializeToString(), "cpu", optimize=optimize, eca_op=False)
    fixed = runner.inputs[0].shape[0]
    batch = fixed if isinstance(fixed, int) else 4
    out = runner.run_all(images, batch, fixed_batch=isinstance(fixed, int))
    return {k: v.astype(np.float64).reshape(len(v), -1) for k, v in out.items()}


def check_fusion(
    unfused: onnx.ModelProto,
    fused: onnx.ModelProto,
    images: np.ndarray | None = None,
    tolerance: float = FUSION_TOLERANCE,
) -> FusionCheck:
    """Compare every output of the two models in ONNX Runtime (CPU) on real photographs (see FUSION_TOLERANCE).

    Each output is judged relative to its own largest value per image; the verdict is the worst output's.
    """
    if images is None:
        images = _check_images(unfused)
    ref, out, plain = _outputs(unfused, images), _outputs(fused, images), _outputs(unfused, images, optimize=False)
    if set(out) != set(ref):
        raise EcaDeployError(f"the fused model has outputs {', '.join(out)}, the unfused one {', '.join(ref)}")
    per_output: dict[str, dict[str, float]] = {}
    for name, r in ref.items():
        scale = np.maximum(1.0, np.abs(r).max(axis=1))
        diff = np.abs(out[name] - r).max(axis=1)
        per_output[name] = {
            "max_abs_diff": float(diff.max()),
            "relative_diff": float((diff / scale).max()),
            "float32_noise": float((np.abs(plain[name] - r).max(axis=1) / scale).max()),
        }

    def margin(name: str) -> float:
        p = per_output[name]
        return p["relative_diff"] / max(tolerance, NOISE_FACTOR * p["float32_noise"])

    worst = max(per_output, key=margin)
    w = per_output[worst]
    return FusionCheck(
        images=len(images),
        max_abs_diff=w["max_abs_diff"],
        relative_diff=w["relative_diff"],
        float32_noise=w["float32_noise"],
        tolerance=tolerance,
        bound=max(tolerance, NOISE_FACTOR * w["float32_noise"]),
        output=worst,
        per_output=per_output,
    )


def compare_fused(unfused: onnx.ModelProto, fused: onnx.ModelProto, images: np.ndarray | None = None) -> float:
    """Max abs difference of the two models over every output on real photographs, in ONNX Runtime (CPU)."""
    if images is None:
        images = _check_images(unfused)
    ref, out = _outputs(unfused, images), _outputs(fused, images)
    return max(float(np.abs(out[k] - r).max()) for k, r in ref.items())


def validate_tolerance(tolerance: float) -> None:
    if not tolerance > 0:
        raise EcaDeployError(
            f"--tolerance must be a positive fraction of the largest logit, e.g. 1e-4, not {tolerance}"
        )


def run_fuse(
    source: Path,
    output: Path,
    write_unchanged: bool = False,
    verify: bool = True,
    tolerance: float = FUSION_TOLERANCE,
    residual: bool = True,
) -> FuseResult:
    validate_tolerance(tolerance)
    model = load_onnx(source)
    claim_output_file(output, "--output", [source])
    unfused = onnx.ModelProto()
    unfused.CopyFrom(model)
    report = fuse_eca(model, residual=residual)
    check = None
    if report.count:
        check_model(model, "the fused model")
        if verify:
            check = check_fusion(unfused, model, tolerance=tolerance)
            if not check.passed:
                raise CheckFailedError(check.refusal(output))
    written = bool(report.count) or write_unchanged
    if written:
        save_onnx(model, output)
    return FuseResult(source, output, report, written, check.max_abs_diff if check else None, check)

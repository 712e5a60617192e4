"""The export stage: build or load the model, export, optionally fuse, verify against PyTorch."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from rich.console import Console
from rich.table import Table

from eca_deploy.errors import CheckFailedError

StatusFactory = Callable[[str], contextlib.AbstractContextManager[Any]] | None


def _status(factory: StatusFactory, message: str) -> contextlib.AbstractContextManager[Any]:
    return factory(message) if factory else contextlib.nullcontext()


@dataclass
class ExportResult:
    model: str
    output: Path
    opset: int
    batch: int | str
    img_size: int
    random_weights: bool
    fused_blocks: int | None = None
    verification: dict[str, Any] | None = None
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "output": str(self.output), "opset": self.opset, "batch": self.batch,
            "img_size": self.img_size, "random_weights": self.random_weights, "fused_eca_blocks": self.fused_blocks,
            "verification": self.verification, "passed": not self.failures, "failures": self.failures,
        }  # fmt: skip

    def print(self, console: Console) -> None:
        console.print(f"[green]wrote[/green] {self.output} (opset {self.opset}, batch {self.batch}, "
                      f"{self.img_size}x{self.img_size})")  # fmt: skip
        if self.fused_blocks is not None:
            console.print(f"fused {self.fused_blocks} ECA blocks into ECA nodes")
        if self.verification:
            v = self.verification
            table = Table(title="ONNX Runtime (CPU) vs PyTorch", show_header=True)
            for col in ("images", "max abs error", "cosine (min)", "top-1 agreement", "verdict"):
                table.add_column(col, justify="right")
            table.add_row(str(v["images"]), f"{v['max_abs_error']:.3g}", f"{v['cosine_min']:.6f}",
                          f"{v['top1_agreement']:.1%}", "[green]pass[/green]")  # fmt: skip
            console.print(table)


def run_export(
    *,
    model_name: str,
    weights: Path | None,
    output: Path,
    opset: int = 17,
    batch: int | None = None,
    img_size: int = 224,
    num_classes: int | None = None,
    k_size: tuple[int, ...] | None = None,
    exporter: str = "torchscript",
    fuse: bool = False,
    fuse_tolerance: float | None = None,  # default: pipeline.fuse.FUSION_TOLERANCE
    images: Path | None = None,
    verify: bool = True,
    warn: Callable[[str], None] = lambda _m: None,
    status: StatusFactory = None,
) -> ExportResult:
    """Export `model_name` to `output`; raise CheckFailedError (exit 1) if verification fails.

    On failure nothing is left at `output`: the file is written atomically after export and verification
    of an in-memory copy, so an existing file is only replaced by a model that passed.
    """
    from eca_deploy.data.images import Preprocessing, list_images, load_images
    from eca_deploy.exporters import ExportOptions, export_onnx, verify_onnx
    from eca_deploy.fileio import check_writable, sha256_file
    from eca_deploy.models import block_k_sizes, create_model, get_spec
    from eca_deploy.models.checkpoint import load_model
    from eca_deploy.models.seeded import RANDOM_WEIGHTS, seeded_model
    from eca_deploy.onnx_io import save_onnx

    spec = get_spec(model_name)
    check_writable(output)
    image_paths = list_images(images) if images else None  # fail on a bad folder before any work
    opts = ExportOptions(opset=opset, batch=batch, img_size=img_size, exporter=exporter,
                         preprocessing=Preprocessing.for_size(img_size, mean=spec.mean, std=spec.std))  # fmt: skip
    opts.validate()
    with _status(status, f"building {model_name}"):
        if weights is None:
            warn(
                f"no --weights given: exporting {model_name} with a seeded random initialisation "
                "(seed 0, BatchNorm statistics from the sample photos)"
            )
            block_k = block_k_sizes(create_model(model_name, num_classes or 1000, k_size)) if k_size else None
            model = seeded_model(model_name, num_classes or 1000, block_k, img_size)
        else:
            model = load_model(model_name, weights, num_classes)
    source = RANDOM_WEIGHTS if weights is None else f"{weights.name} sha256:{sha256_file(weights)}"
    result = ExportResult(model_name, output, opset, batch or "dynamic", img_size, weights is None)
    with _status(status, f"exporting {model_name} to ONNX (opset {opset}, {exporter})"):
        onnx_model = export_onnx(model, model_name, opts, weights_source=source)
    if fuse:
        from eca_deploy.fusion import fuse_eca
        from eca_deploy.pipeline.fuse import FUSION_TOLERANCE, check_fusion, validate_tolerance

        tolerance = FUSION_TOLERANCE if fuse_tolerance is None else fuse_tolerance
        validate_tolerance(tolerance)
        unfused = onnx.ModelProto()
        unfused.CopyFrom(onnx_model)
        with _status(status, "fusing ECA blocks"):
            report = fuse_eca(onnx_model)
        result.fused_blocks = report.count
        if verify and report.count:
            with _status(status, "comparing fused and unfused models on real photographs"):
                fusion = check_fusion(unfused, onnx_model, tolerance=tolerance)
            del unfused
            if not fusion.passed:
                raise CheckFailedError(fusion.refusal(output))
    if verify:
        with _status(status, "verifying against PyTorch on real photographs"):
            batch_images = load_images(image_paths, opts.preprocessing)
            verified = verify_onnx(model, onnx_model.SerializeToString(), batch_images, batch)
        result.verification = verified.agreement.as_dict()
        result.verification["worst_images"] = [batch_images.names[i] for i in verified.agreement.worst_images]
        result.failures = verified.failures
        if verified.failures:
            raise CheckFailedError(
                f"exported ONNX disagrees with PyTorch ({'; '.join(verified.failures)}): {output} not written"
            )
    save_onnx(onnx_model, output)
    return result

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

from eca_deploy.data.images import Preprocessing, list_images, load_images
from eca_deploy.errors import CheckFailedError
from eca_deploy.exporters import ExportOptions, export_onnx, verify_onnx
from eca_deploy.exporters.metadata import read_metadata
from eca_deploy.fileio import check_writable, claim_output_file
from eca_deploy.fusion import fuse_eca
from eca_deploy.memory import check_torch_memory, image_bytes, require, torch_activation_bytes
from eca_deploy.models import sources
from eca_deploy.models.registry import get_spec
from eca_deploy.models.sources import LoadedModel
from eca_deploy.models.timm_models import timm_name
from eca_deploy.onnx_io import save_onnx
from eca_deploy.pipeline.fuse import FUSION_TOLERANCE, check_fusion, validate_tolerance

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
    verification: dict[str, Any] | None = None  # the worst output's agreement (a classifier: its logits)
    failures: list[str] = field(default_factory=list)
    input_size: tuple[int, int] | None = None  # H, W (None: img_size square)
    outputs: list[dict[str, Any]] = field(default_factory=list)  # name, shape, kind of every output
    verified_outputs: dict[str, Any] | None = None  # per output: agreement, kind, passed, failures

    @property
    def size_text(self) -> str:
        h, w = self.input_size or (self.img_size, self.img_size)
        return f"{h}x{w}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "output": str(self.output),
            "opset": self.opset,
            "batch": self.batch,
            "img_size": self.img_size,
            "input_size": list(self.input_size or (self.img_size, self.img_size)),
            "random_weights": self.random_weights,
            "fused_eca_blocks": self.fused_blocks,
            "outputs": self.outputs,
            "verification": self.verification,
            "verified_outputs": self.verified_outputs,
            "passed": not self.failures,
            "failures": self.failures,
        }

    def print(self, console: Console) -> None:
        console.print(f"[green]wrote[/green] {self.output} (opset {self.opset}, batch {self.batch}, {self.size_text})")
        if self.fused_blocks is not None:
            console.print(f"fused {self.fused_blocks} ECA blocks into ECA nodes")
        if self.verified_outputs:
            table = Table(title=f"ONNX Runtime (CPU) vs PyTorch, {self.size_text}", show_header=True)
            table.add_column("output")
            for col in ("images", "max abs error", "cosine (min)", "top-1 agreement", "verdict"):
                table.add_column(col, justify="right")
            for name, v in self.verified_outputs.items():
                top1 = "-" if v["top1_agreement"] is None else f"{v['top1_agreement']:.1%}"
                table.add_row(
                    name,
                    str(v["images"]),
                    f"{v['max_abs_error']:.3g}",
                    f"{v['cosine_min']:.6f}",
                    top1,
                    "[green]pass[/green]" if v["passed"] else "[red]FAIL[/red]",
                )
            console.print(table)


VERIFY_BATCH = 4  # verify_onnx's step with a dynamic batch
RECALIBRATION_BATCH = 8  # recalibrate_batchnorm's batch (random weights)
SAMPLE_PHOTOS = 12


def check_export_memory(
    model_name: str, img_size: int | tuple[int, int] | None, batch: int | None, random: bool
) -> None:
    """Refuse a zoo or timm export whose activations (estimated on the meta device) exceed the free memory.

    The work batch is the largest the export runs: BatchNorm recalibration (random weights), verification
    or the fixed --batch. A model whose architecture cannot run on the meta device is not estimated.
    """
    import torch

    k = sources.kind(model_name)
    if k not in ("zoo", "timm"):
        return
    requested = img_size[0] if isinstance(img_size, tuple) else img_size
    size = sources.default_preprocessing(model_name, requested).size
    height, width = img_size if isinstance(img_size, tuple) else (size, size)
    work = max(batch or VERIFY_BATCH, RECALIBRATION_BATCH if random else 1)
    try:
        with torch.device("meta"):
            if k == "zoo":
                module = get_spec(model_name).build()
            else:
                import timm

                module = timm.create_model(timm_name(model_name), pretrained=False)
        needed = torch_activation_bytes(module, height, width, work) + image_bytes(height, width, SAMPLE_PHOTOS)
    except Exception:  # an estimate is a precaution: a model it cannot run on meta is exported as before
        return
    require(needed, f"exporting {model_name} at {height}x{width}, batch {work}")


def run_export(
    *,
    model_name: str,
    weights: Path | None,
    output: Path,
    opset: int = 17,
    batch: int | None = None,
    img_size: int | None = None,
    num_classes: int | None = None,
    k_size: tuple[int, ...] | None = None,
    exporter: str = "torchscript",
    fuse: bool = False,
    fuse_tolerance: float | None = None,  # default: pipeline.fuse.FUSION_TOLERANCE
    images: Path | None = None,
    verify: bool = True,
    pretrained: bool = False,
    pretrained_file: Path | None = None,
    preprocessing: Preprocessing | None = None,
    adjust: Callable[[Preprocessing], Preprocessing] | None = None,
    warn: Callable[[str], None] = lambda _m: None,
    status: StatusFactory = None,
    output_names: tuple[str, ...] | None = None,
    trust_checkpoint: bool = False,
) -> ExportResult:
    """Export the model `model_name` names (zoo, `timm:NAME`, `file.py:factory`) to `output`.

    Raise CheckFailedError (exit 1) if verification fails. On failure nothing is left at `output`: the
    file is written atomically after export and verification of an in-memory copy, so an existing file is
    only replaced by a model that passed. `img_size` None means the model's own input size.
    """
    sources.validate(model_name, trust_checkpoint)
    kind = sources.kind(model_name)
    model_file = model_name.rpartition(":")[0] if kind == "file" else model_name if kind == "ultralytics" else None
    claim_output_file(output, "--output", [weights, pretrained_file, model_file, images])
    if images:
        list_images(images)  # fail on a bad folder before any work
    check_export_memory(model_name, img_size, batch, random=weights is None and not pretrained)
    with _status(status, f"building {model_name}"):
        loaded = sources.load(
            model_name,
            weights=weights,
            pretrained=pretrained,
            pretrained_file=pretrained_file,
            num_classes=num_classes,
            img_size=img_size,
            k_size=k_size,
            preprocessing=preprocessing,
            adjust=adjust,
            trust_checkpoint=trust_checkpoint,
        )
    if loaded.random:
        recalibrated = ", BatchNorm statistics from the sample photos" if kind in ("zoo", "timm") else ""
        warn(f"no --weights given: exporting {model_name} with a seeded random initialisation (seed 0{recalibrated})")
    return export_loaded(
        loaded,
        output=output,
        opset=opset,
        batch=batch,
        exporter=exporter,
        fuse=fuse,
        fuse_tolerance=fuse_tolerance,
        images=images,
        verify=verify,
        status=status,
        output_names=output_names,
    )


def export_loaded(
    loaded: LoadedModel,
    *,
    output: Path,
    opset: int = 17,
    batch: int | None = None,
    exporter: str = "torchscript",
    fuse: bool = False,
    fuse_tolerance: float | None = None,
    images: Path | None = None,
    verify: bool = True,
    status: StatusFactory = None,
    output_names: tuple[str, ...] | None = None,
) -> ExportResult:
    """Export a built model (see `run_export`), verify it against PyTorch, write it atomically."""
    check_writable(output)
    image_paths = list_images(images) if images else None
    prep = loaded.preprocessing

    classifier = sources.kind(loaded.ref) in ("zoo", "timm")
    opts = ExportOptions(
        opset=opset,
        batch=batch,
        img_size=prep.size,
        exporter=exporter,
        preprocessing=prep,
        output_names=output_names,
        classifier=classifier,
    )
    opts.validate()
    model, name = loaded.module, loaded.ref
    if sources.kind(name) in ("file", "ultralytics", "module"):  # zoo and timm: estimated before they were built
        work, (height, width) = max(batch or VERIFY_BATCH, 2), prep.hw
        check_torch_memory(
            model, height, width, work, SAMPLE_PHOTOS, f"exporting {name} at {height}x{width}, batch {work}"
        )
    result = ExportResult(name, output, opset, batch or "dynamic", prep.size, loaded.random, input_size=prep.hw)
    with _status(status, f"exporting {name} to ONNX (opset {opset}, {exporter})"):
        onnx_model = export_onnx(model, name, opts, weights_source=loaded.weights)
    specs = read_metadata(onnx_model).outputs  # type: ignore[union-attr]
    result.outputs = [o.as_dict() for o in specs]
    if fuse:
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
            verified = verify_onnx(
                model, onnx_model.SerializeToString(), batch_images, batch, kinds={o.name: o.kind for o in specs}
            )
        result.verification = verified.agreement.as_dict()
        result.verification["worst_images"] = [batch_images.names[i] for i in verified.agreement.worst_images]
        result.verified_outputs = {n: c.as_dict(batch_images.names) for n, c in verified.outputs.items()}
        result.failures = verified.failures
        if verified.failures:
            raise CheckFailedError(
                f"exported ONNX disagrees with PyTorch ({'; '.join(verified.failures)}): {output} not written"
            )
    save_onnx(onnx_model, output)
    return result

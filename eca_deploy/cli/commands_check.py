"""`eca-deploy check`: accuracy of an ONNX model or TensorRT engine against PyTorch."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from eca_deploy.backends.handle import ModelSpec, open_model
from eca_deploy.cli.app import app
from eca_deploy.cli.console import console, warn
from eca_deploy.cli.groups import (
    Batch,
    Decoder,
    Engine,
    Force,
    Images,
    ImgSize,
    Interpolation,
    Json,
    Layout,
    Mean,
    ModelOrMetadata,
    OptionalOnnx,
    Plugin,
    Provider,
    ResizeMode,
    Runtime,
    Std,
    TrustCheckpoint,
    Weights,
)
from eca_deploy.cli.options import (
    PROVIDERS,
    JsonOutput,
    PreprocessingFlags,
    check_at_least,
    check_between,
    check_choice,
    check_file,
    check_image_folder,
    check_onnx_file,
    check_positive,
    detector_options,
    one_model,
    parse_img_size,
    parse_layout,
    parse_runtime,
)
from eca_deploy.errors import CheckFailedError
from eca_deploy.exporters.metadata import random_weights_notice
from eca_deploy.fileio import allow_replacing
from eca_deploy.pipeline.check import run_check, tolerance_for
from eca_deploy.pipeline.records import CheckRecord, DetectionRecord, ToleranceRecord
from eca_deploy.runtime.decoder import import_function


@app.command("check")
def check_command(
    onnx_path: OptionalOnnx = None,
    engine: Engine = None,
    provider: Provider = "cpu",
    runtime: Runtime = "onnxruntime",
    model: ModelOrMetadata = None,
    weights: Weights = None,
    img_size: ImgSize = None,
    mean: Mean = None,
    std: Std = None,
    interpolation: Interpolation = None,
    resize_mode: ResizeMode = None,
    images: Images = None,
    batch: Batch = 8,
    max_abs: float | None = typer.Option(None, "--max-abs", help="Max abs error / max(1, max |logit|)."),
    min_cosine: float | None = typer.Option(None, "--min-cosine", help="Lowest per-image cosine similarity."),
    min_top1: float | None = typer.Option(None, "--min-top1", help="Lowest top-1 agreement (0..1)."),
    per_layer: bool = typer.Option(False, "--per-layer", help="Compare block outputs; name the first that jumps."),
    reference_onnx: Path | None = typer.Option(
        None, "--reference-onnx", help="Compare with this FP32 ONNX (e.g. the unfused export) instead of PyTorch."
    ),
    plugin: Plugin = None,
    layout: Layout = None,
    decoder: Decoder = None,
    trust_checkpoint: TrustCheckpoint = False,
    json_out: Json = None,
    force: Force = False,
) -> None:
    """Run the model and its reference (PyTorch or --reference-onnx) on the same photos; exit 1 outside tolerance.

    Every output is judged (cosine, max abs/rel error; top-1/top-5 for logits); one failing output fails.
    An ONNX without eca-deploy metadata is preprocessed with --mean/--std/--resize-mode, default ImageNet's (mean
    0.485,0.456,0.406, std 0.229,0.224,0.225, bilinear, resize 256/224 of the crop), at its static size or
    --img-size; an ultralytics export with ultralytics' letterbox (its own metadata). The table says which.
    A detector (head layout in its metadata, --layout or --decoder) is judged by its detections too: recall,
    precision, IoU, score drift, agreement mAP.
    """
    allow_replacing(force)
    one_model(onnx_path, engine)
    check_onnx_file(onnx_path, "--onnx")
    check_file(engine, "--engine")
    check_file(weights, "--weights")
    check_onnx_file(reference_onnx, "--reference-onnx")
    check_image_folder(images, "--images")
    check_at_least(batch, "--batch")
    check_choice(provider, "--provider", PROVIDERS)
    check_positive(max_abs, "--max-abs")
    check_between(min_cosine, "--min-cosine", -1.0, 1.0)
    check_between(min_top1, "--min-top1", 0.0, 1.0)
    layout = parse_layout(layout)
    if decoder is not None:
        import_function(decoder)  # a missing file or function fails before any work
    json_to = JsonOutput.of(json_out, inputs=[onnx_path, engine, weights, images, reference_onnx, plugin])
    size = parse_img_size(img_size)
    flags = PreprocessingFlags.of(mean, std, interpolation, resize_mode)
    model_spec = ModelSpec.of(
        onnx_path,
        engine,
        provider=provider,
        plugin=plugin,
        runtime=parse_runtime(runtime),
        qdq_arithmetic=True,
        img_size=size,
    )
    target = open_model(model_spec)
    tol = tolerance_for(target.precision, max_abs, min_cosine, min_top1)
    spec, decode = detector_options(layout, decoder, [o.name for o in target.runner.outputs])
    adjust = flags.adjust
    with console.status(f"checking {target.label} against {'its reference ONNX' if reference_onnx else 'PyTorch'}"):
        result = run_check(
            target, model_name=model, weights=weights, images=images, batch=batch, tolerance=tol,
            per_layer=per_layer, reference_onnx=reference_onnx, adjust=adjust, warn=warn,
            detection=spec, decoder=decode, trust_checkpoint=trust_checkpoint,
        )  # fmt: skip
    report = result.as_dict()
    json_to.write(report)
    record = CheckRecord.from_dict(report)
    print_report(record)
    if not result.passed:
        failed = ", ".join(record.failed_outputs)
        raise CheckFailedError(f"{target.label} is outside tolerance on {failed}: {'; '.join(result.failures)}")


def print_report(report: CheckRecord) -> None:
    if report.random_weights:
        console.print(f"[yellow]{report.target}: {random_weights_notice(report.interface)}[/yellow]")
    outputs = report.outputs
    t = report.tolerance or ToleranceRecord()
    against = report.reference or f"PyTorch {report.model}"
    size = report.input_size
    at = f", {report.preprocessing}" if report.preprocessing else f", {size[0]}x{size[1]}" if size else ""
    eca = report.runtime_settings.get("eca_implementation")
    at = f", ECA {eca}{at}" if eca else at
    table = Table(title=f"{report.target} ({report.backend}, {report.precision}{at}) vs {against}")
    table.add_column("output")
    several = len(outputs) > 1
    # no max relative error: on values near zero it says nothing (it stays in --json, as max_rel_error)
    columns = ("images", "max abs", "mean abs", "cosine (min)", "top-1", "top-5", "KL")
    for col in ("kind", *columns, "verdict") if several else columns:
        table.add_column(col, justify="right")

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    for name, a in outputs.items():
        cells = [str(a.images), f"{a.max_abs_error:.3g}", f"{a.mean_abs_error:.3g}", f"{a.cosine_min:.6f}",
                 pct(a.top1_agreement), pct(a.top5_agreement),
                 "-" if a.kl_divergence is None else f"{a.kl_divergence:.3g}"]  # fmt: skip
        if several:
            cells = [a.kind, *cells, "[green]pass[/green]" if a.passed else "[red]FAIL[/red]"]
        table.add_row(name, *cells)
    console.print(table)
    for note in report.notes:
        console.print(f"[yellow]note: {note}[/yellow]")
    worst = next((a for a in outputs.values() if not a.passed), next(iter(outputs.values())))
    scale = report.reference_scale if not several else "that output's max |value|"
    bound = "none" if t.max_abs is None else f"{t.max_abs:g} x max(1, {_g(scale)})"
    top1 = f", top-1 >= {t.top1_agreement:.0%}" + (" (logits)" if several else "")
    console.print(
        f"tolerance ({report.precision}): max abs {bound}, cosine >= {t.cosine_min}"
        f"{top1}; worst images: {', '.join(worst.worst_images)}"
    )
    print_detection(report.detection)
    layers = report.per_layer
    if layers:
        lt = Table(title=f"per block, against {layers.against}")
        for col in ("block", "rel error", "cosine", ""):
            lt.add_column(col)
        for row in layers.blocks:
            lt.add_row(
                row.block,
                f"{row.rel_error:.3g}",
                f"{row.cosine:.6f}",
                "[red]<- error jumps here[/red]" if row.jump else "",
            )
        console.print(lt)
        console.print(f"first block where error jumps: {layers.first_jump or 'none'}")
    failed = report.failed_outputs
    if failed and len(outputs) > 1:
        console.print(f"failed outputs: {', '.join(failed)}")
    verdict = "[green]PASS[/green]" if report.passed else f"[red]FAIL[/red]: {'; '.join(report.failures)}"
    console.print(verdict)


def print_detection(found: DetectionRecord | None) -> None:
    """The detection agreement table of a detector (or why it was not measured)."""
    if found is None:
        return
    head = f"{found.layout} head on {', '.join(found.outputs)}"
    if not found.measured or found.agreement is None:
        console.print(f"[yellow]detections ({head}): not measured: {found.not_measured}[/yellow]")
        return
    a = found.agreement
    table = Table(title=f"detections ({head}), scores >= {a.score_threshold:g}, matched at IoU >= 0.5")
    columns = ("images", "reference", "candidate", "recall", "precision", "F1", "mean IoU", "box offset px",
               "score drift", "score bias", "mAP50-95", "mAP50", "verdict")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="right")

    def f(v: float | None, spec: str = ".3f") -> str:
        return "-" if v is None else format(v, spec)

    table.add_row(str(a.images), str(a.reference_detections), str(a.candidate_detections), f(a.recall),
                  f(a.precision), f(a.f1), f(a.mean_iou), f(a.box_bias, ".2f"), f(a.max_score_drift),
                  f(a.score_bias, "+.3f"), f(a.map50_95), f(a.map50),
                  "[green]pass[/green]" if found.passed else "[red]FAIL[/red]")  # fmt: skip
    console.print(table)


def _g(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float | int) else str(value)

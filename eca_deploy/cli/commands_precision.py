"""`eca-deploy convert --fp16` and `eca-deploy quantize`: precision decided in ONNX, checked on the CPU."""

from __future__ import annotations

import contextlib
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from eca_deploy.cli.app import app
from eca_deploy.cli.console import console, warn
from eca_deploy.cli.groups import (
    CalibCount,
    CalibImages,
    Force,
    Fp16,
    Images,
    ImgSize,
    Interpolation,
    Json,
    Mean,
    Method,
    Onnx,
    ResizeMode,
    Std,
    Verify,
    output_file,
)
from eca_deploy.cli.options import (
    JsonOutput,
    PreprocessingFlags,
    check_at_least,
    check_image_folder,
    check_onnx_file,
    parse_img_size,
)
from eca_deploy.errors import CheckFailedError, EcaDeployError
from eca_deploy.fileio import allow_replacing, distinct_outputs
from eca_deploy.pipeline.records import ConvertRecord, PrecisionCheckRecord, QuantizeRecord
from eca_deploy.precision import DEFAULT_METHOD

# pipeline.convert, pipeline.quantize and precision.quantize import onnx: imported in the commands (light `--help`).


def _check_table(check: PrecisionCheckRecord, title: str) -> Table:
    size, prep = check.input_size, check.preprocessing
    table = Table(title=f"{title}, {prep}" if prep else f"{title}, {size[0]}x{size[1]}" if size else title)
    outputs: dict[str, Any] = dict(check.outputs) or {"logits": check}  # OutputRecords, or the check's own figures
    table.add_column("output")
    for col in ("images", "max abs", "cosine (min)", "top-1", "top-5", "verdict"):
        table.add_column(col, justify="right")

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    for name, a in outputs.items():
        verdict = "[green]pass[/green]" if a.passed else "[red]FAIL: " + "; ".join(a.failures) + "[/red]"
        table.add_row(
            name,
            str(a.images),
            f"{a.max_abs_error:.3g}",
            f"{a.cosine_min:.6f}",
            pct(a.top1_agreement),
            pct(a.top5_agreement),
            verdict,
        )
    return table


def calibration_progress(progress: Progress) -> Any:
    task = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            task = progress.add_task("calibrating", total=total)
        progress.update(task, completed=done)

    return update


def new_progress(json_out: bool = False) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=json_out,
    )


@app.command("convert")
def convert_command(
    onnx_path: Onnx,
    fp16: Fp16 = False,
    output: output_file("NAME.fp16.onnx") = None,
    keep_fp32: str | None = typer.Option(None, "--keep-fp32", help="Op types to keep in FP32, e.g. Sigmoid,Softmax."),
    fp16_io: bool = typer.Option(False, "--fp16-io", help="Float16 inputs/outputs (default: float32, cast inside)."),
    images: Images = None,
    verify: Verify = True,
    img_size: ImgSize = None,
    mean: Mean = None,
    std: Std = None,
    interpolation: Interpolation = None,
    resize_mode: ResizeMode = None,
    json_out: Json = None,
    force: Force = False,
) -> None:
    """Write an FP16 copy of an ONNX model (TensorRT 11 builds FP16 engines only from FP16 ONNX)."""
    allow_replacing(force)
    from eca_deploy.pipeline.convert import run_convert

    if not fp16:
        raise EcaDeployError("choose the target precision: --fp16 (INT8 is `eca-deploy quantize`)")
    size = parse_img_size(img_size)
    flags = PreprocessingFlags.of(mean, std, interpolation, resize_mode)
    ops = tuple(o.strip() for o in keep_fp32.split(",") if o.strip()) if keep_fp32 else ()
    out = output or onnx_path.with_name(f"{onnx_path.name.removesuffix('.onnx')}.fp16.onnx")
    check_onnx_file(onnx_path, "--onnx")
    check_image_folder(images, "--images")
    json_to = JsonOutput.of(json_out, inputs=[onnx_path, images])
    distinct_outputs((out, "--output"), (json_to.path, "--json"))
    status = console.status("converting to FP16 and comparing with FP32")
    with status if not json_to.stdout else contextlib.nullcontext():
        result = run_convert(onnx_path, out, keep_io_types=not fp16_io, keep_fp32_ops=ops, verify=verify,
                             images=images, warn=warn, img_size=size, adjust=flags.adjust)  # fmt: skip
    data = result.as_dict()
    json_to.write(data)
    done = ConvertRecord.from_dict(data)
    console.print(
        f"[green]wrote[/green] {out}: {done.fp16_nodes} nodes in FP16, {len(done.fp32_nodes)} kept in "
        f"FP32, {done.casts} casts, {done.io_types} inputs/outputs"
    )
    if done.check:
        console.print(_check_table(done.check, "FP16 vs FP32 (ONNX Runtime, CPU)"))


@app.command("quantize")
def quantize_command(
    onnx_path: Onnx,
    calib_images: CalibImages,
    calib_count: CalibCount = 512,
    method: Method = DEFAULT_METHOD,
    output: output_file("NAME.int8.onnx") = None,
    quantize_eca_gate: bool = typer.Option(False, "--quantize-eca-gate", help="Also quantize the ECA gate (worse)."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Reuse cached calibration ranges."),
    images: Images = None,
    verify: Verify = True,
    keep_failed: bool = typer.Option(
        False, "--keep-failed", help="Write the model even outside tolerance (marked failed in its metadata)."
    ),
    img_size: ImgSize = None,
    mean: Mean = None,
    std: Std = None,
    interpolation: Interpolation = None,
    resize_mode: ResizeMode = None,
    json_out: Json = None,
    force: Force = False,
) -> None:
    """Calibrate on real images and write a Q/DQ INT8 ONNX laid out for TensorRT (explicit quantization)."""
    allow_replacing(force)
    from eca_deploy.pipeline.quantize import run_quantize
    from eca_deploy.precision.quantize import QuantizeOptions

    size = parse_img_size(img_size)
    flags = PreprocessingFlags.of(mean, std, interpolation, resize_mode)
    options = QuantizeOptions(method=method, count=calib_count, quantize_eca_gate=quantize_eca_gate, use_cache=cache)
    out = output or onnx_path.with_name(f"{onnx_path.name.removesuffix('.onnx')}.int8.onnx")
    check_at_least(calib_count, "--calib-count")
    options.validate()
    check_onnx_file(onnx_path, "--onnx")
    check_image_folder(calib_images, "--calib-images")
    check_image_folder(images, "--images")
    json_to = JsonOutput.of(json_out, inputs=[onnx_path, calib_images, images])
    distinct_outputs((out, "--output"), (json_to.path, "--json"))
    with new_progress(json_to.stdout) as progress:
        result = run_quantize(onnx_path, calib_images, out, options, verify=verify, images=images, warn=warn,
                              progress=calibration_progress(progress), keep_failed=keep_failed,
                              img_size=size, adjust=flags.adjust)  # fmt: skip
    data = result.as_dict()
    json_to.write(data)
    done = QuantizeRecord.from_dict(data)
    if done.check:
        console.print(_check_table(done.check, "INT8 (Q/DQ arithmetic) vs FP32 (ONNX Runtime, CPU)"))
    if not result.passed:
        failures = "; ".join(done.check.failures if done.check else ())
        fix = "calibrate with more, more representative images, or try another --method"
        if result.written:
            raise CheckFailedError(
                f"INT8 model outside tolerance ({failures}): {out} kept as asked, marked failed in its metadata; {fix}"
            )
        raise CheckFailedError(
            f"INT8 model outside tolerance ({failures}): {out} not written; {fix}, "
            "or pass --keep-failed to keep it anyway"
        )
    q = done.qdq
    console.print(
        f"[green]wrote[/green] {out}: {q.activations_per_tensor} activations per tensor, "
        f"{q.weights_per_channel} weights per channel (symmetric INT8)"
    )
    source = "reused from the cache" if done.source == "cache" else "calibrated"
    at = f" at {done.input_size[0]}x{done.input_size[1]}" if done.input_size else ""
    if done.preprocessing:
        at = f", {done.preprocessing}"
    console.print(f"calibration: {done.method} on {done.images} images{at} ({source}); cache: {done.cache_file}")
    gate = "quantized" if done.eca_gate_quantized else "kept in float"
    blocks = done.eca_blocks_unfused + done.eca_nodes_fused
    console.print(
        f"ECA gates: {gate} ({done.eca_nodes_fused} fused nodes, {done.eca_blocks_unfused} unfused blocks)"
        if blocks
        else "no ECA blocks"
    )

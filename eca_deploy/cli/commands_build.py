"""`eca-deploy build`: a TensorRT engine and its sidecar from an ONNX model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from eca_deploy.cli.app import app
from eca_deploy.cli.commands_precision import calibration_progress
from eca_deploy.cli.console import console, warn
from eca_deploy.cli.groups import (
    BatchRange,
    CalibCount,
    Force,
    Fp16,
    ImgSize,
    Json,
    Method,
    Onnx,
    OptionalCalibImages,
    Plugin,
    output_file,
)
from eca_deploy.cli.options import (
    JsonOutput,
    check_at_least,
    check_image_folder,
    check_onnx_file,
    parse_img_size,
)
from eca_deploy.fileio import allow_replacing, claim_output_file, distinct_outputs

# engine.build, pipeline.build and precision.quantize import onnx: imported in the command, so `--help` stays light.


def _build_progress(progress: Progress) -> Any:
    tasks: dict[str, Any] = {}

    def update(phase: str, step: int, steps: int) -> None:
        if phase not in tasks:
            tasks[phase] = progress.add_task(phase, total=max(steps, 1))
        progress.update(tasks[phase], completed=step)

    return update


def _plugin_cell(data: dict[str, Any]) -> str:
    if data.get("plugin_route") == "aot":
        return f"AOT plugin, PTX by {data.get('ptx_compiler')} {data.get('ptx_compiler_version') or ''}".rstrip()
    return str(data.get("plugin_path") or "no plugin")


@app.command("build")
def build_command(
    onnx_path: Onnx,
    fp16: Fp16 = False,
    int8: bool = typer.Option(False, "--int8", help="Build from a Q/DQ model (quantized first with --calib-images)."),
    calib_images: OptionalCalibImages = None,
    calib_count: CalibCount = 512,
    method: Method = "percentile",
    plugin: Plugin = "auto",
    profile: BatchRange = "1:8:32",
    img_size: ImgSize = None,
    workspace: str | None = typer.Option(None, "--workspace", help="Builder workspace limit, e.g. 2G."),
    timing_cache: Path | None = typer.Option(
        None, "--timing-cache", help="Timing cache file, read and updated (default: one per TensorRT version and GPU)."
    ),
    dla_core: int | None = typer.Option(None, "--dla-core", help="Jetson: build for this DLA core."),
    gpu_fallback: bool = typer.Option(False, "--gpu-fallback", help="DLA: run unsupported layers on the GPU."),
    version_compatible: bool = typer.Option(False, "--version-compatible", help="Engine for later TensorRT releases."),
    output: output_file("NAME.plan") = None,
    json_out: Json = None,
    force: Force = False,
) -> None:
    """Compile an ONNX model into a TensorRT engine (strongly typed: the ONNX decides the precision)."""
    allow_replacing(force)
    from eca_deploy.engine.build import Profile, parse_size
    from eca_deploy.pipeline.build import BuildRequest, run_build
    from eca_deploy.precision.quantize import QuantizeOptions

    json_to = JsonOutput.of(json_out, inputs=[onnx_path, calib_images, timing_cache])
    out = output or onnx_path.with_name(f"{onnx_path.name.removesuffix('.onnx')}.plan")
    check_onnx_file(onnx_path, "--onnx")
    size = parse_img_size(img_size)
    check_image_folder(calib_images, "--calib-images")
    check_at_least(calib_count, "--calib-count")
    check_at_least(dla_core, "--dla-core", 0)
    QuantizeOptions(method=method, count=calib_count).validate()
    claim_output_file(out, "--output", [onnx_path, calib_images, timing_cache])
    distinct_outputs(
        (out, "--output"), (out.with_name(out.name + ".json"), "--output's sidecar"), (json_to.path, "--json")
    )
    req = BuildRequest(
        onnx_path=onnx_path, output=out, fp16=fp16, int8=int8, calib_images=calib_images,
        quantize=QuantizeOptions(method=method, count=calib_count), plugin=plugin, profile=Profile.parse(profile),
        img_size=size, workspace=parse_size(workspace) if workspace else None, timing_cache=timing_cache,
        dla_core=dla_core, gpu_fallback=gpu_fallback, version_compatible=version_compatible,
    )  # fmt: skip
    say = (lambda _m: None) if json_to.stdout else console.print
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=json_to.stdout,
    ) as progress:
        result = run_build(
            req,
            say=say,
            warn=warn,
            calib_progress=calibration_progress(progress),
            build_progress=_build_progress(progress),
        )
    data = result.as_dict()
    json_to.write(data)
    table = Table(title=f"{out} ({data['precision']}, TensorRT {data['tensorrt_version']})")
    table.add_column("")
    table.add_column("")
    per = data.get("layers_per_precision") or {}
    rows = [
        ("GPU", f"{data.get('gpu_name')} (sm {data.get('compute_capability')}), CUDA {data.get('cuda_version')}"),
        (
            "profile",
            ", ".join(f"{k}: {' / '.join('x'.join(map(str, s)) for s in v)}" for k, v in data["profile"].items()),
        ),
        ("layers", f"{data.get('layers')} ({', '.join(f'{k} {v}' for k, v in per.items()) or 'per precision n/a'})"),
        (
            "ECA plugin layers",
            f"{data['eca_plugin_layers']}, {data.get('eca_residual_layers', 0)} with their residual "
            f"({_plugin_cell(data)})",
        ),
        ("build time", f"{data['build_seconds']:.1f} s"),
        ("compiled from", str(result.compiled_onnx)),
        ("sidecar", str(result.sidecar)),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)

"""`eca-deploy run`: classify (or detect with `--decoder`) a video file, camera or stream; write or show the frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from eca_deploy.backends.handle import ModelSpec
from eca_deploy.cli.app import INTERRUPTED, app
from eca_deploy.cli.console import console, warn
from eca_deploy.cli.groups import (
    Batch,
    Decoder,
    Engine,
    Force,
    ImgSize,
    Interpolation,
    Json,
    Labels,
    Layout,
    Mean,
    OptionalOnnx,
    Plugin,
    Provider,
    ResizeMode,
    Runtime,
    Std,
    output_file,
)
from eca_deploy.cli.options import (
    PROVIDERS,
    JsonOutput,
    PreprocessingFlags,
    check_choice,
    check_file,
    check_onnx_file,
    check_outputs,
    one_model,
    parse_img_size,
    parse_layout,
    parse_runtime,
)
from eca_deploy.errors import EcaDeployError
from eca_deploy.exporters.metadata import RANDOM_WEIGHTS_NOTICE
from eca_deploy.fileio import allow_replacing, same_file
from eca_deploy.runtime.choose import open_for_run
from eca_deploy.runtime.classifier import Classifier
from eca_deploy.runtime.preprocess import RESIZE_MODES
from eca_deploy.runtime.sources import parse_source
from eca_deploy.runtime.video import RunOptions, run_stream


@app.command("run")
def run_command(
    source: str = typer.Option(..., "--source", "-s", help="Video file, camera index (0), URL, or GStreamer pipeline."),
    engine: Engine = None,
    onnx_path: OptionalOnnx = None,
    output: output_file() = None,
    max_frames: int | None = typer.Option(None, "--max-frames", help="Stop after N frames."),
    batch: Batch = 1,
    display: bool = typer.Option(False, "--display", help="Show the annotated frames in a window (q to stop)."),
    resize: str = typer.Option("exact", "--resize", help="exact (same pixels as check) or fast (OpenCV)."),
    labels: Labels = None,
    log: Path | None = typer.Option(None, "--log", help="Write each frame's top-5 as JSON lines."),
    provider: Provider = "cpu",
    runtime: Runtime = "onnxruntime",
    plugin: Plugin = None,
    img_size: ImgSize = None,
    mean: Mean = None,
    std: Std = None,
    interpolation: Interpolation = None,
    resize_mode: ResizeMode = None,
    json_out: Json = None,
    force: Force = False,
    decoder: Decoder = None,
    layout: Layout = None,
) -> None:
    """Decode frames with OpenCV, classify them, overlay the top-1 label, score and FPS; summary at the end.

    A model without a logits output shows its raw outputs' shapes and max; a detector whose head layout is
    known (metadata, or --layout) its boxes, decoded and NMS'd built in; --decoder FILE.py:FUNCTION overrides.
    """
    allow_replacing(force)
    one_model(onnx_path, engine)
    size = parse_img_size(img_size)
    flags = PreprocessingFlags.of(mean, std, interpolation, resize_mode)
    model = onnx_path or engine
    options = RunOptions(batch=batch, max_frames=max_frames, output=output, display=display, log=log)
    options.validate()
    check_onnx_file(onnx_path, "--onnx")
    check_file(engine, "--engine")
    check_file(labels, "--labels")
    check_choice(resize, "--resize", RESIZE_MODES)
    provider = check_choice(provider, "--provider", PROVIDERS)
    runtime = parse_runtime(runtime)
    layout = parse_layout(layout)
    if layout is not None and decoder is not None:
        raise EcaDeployError("pass --layout NAME or --decoder FILE.py:FUNCTION, not both")
    parsed = parse_source(source)  # a missing file or unusable pipeline fails before the model loads
    video_in = Path(str(parsed.target)) if parsed.kind == "file" else None
    json_to = JsonOutput.of(json_out, inputs=[video_in, model, labels, plugin])
    for sink in (output, log, json_to.path):
        if sink is not None and video_in is not None and same_file(sink, video_in):
            raise EcaDeployError(f"{sink} is the source video: write the output to another file")
    check_outputs((output, "--output"), (log, "--log"), (json_to.path, "--json"), inputs=[model, labels, plugin])
    spec = ModelSpec.of(
        onnx_path, engine, provider=provider, plugin=plugin, runtime=runtime, qdq_arithmetic=True, img_size=size
    )
    classifier = open_for_run(
        spec, decoder, resize=resize, labels=labels, adjust=flags.adjust, warn=warn, layout=layout
    )
    if json_to.stdout:
        summary = run_stream(classifier, source, options)
    else:
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[fps]}"), TimeElapsedColumn()]  # fmt: skip
        with Progress(*columns, console=console, transient=True) as progress:
            verb = "classifying" if isinstance(classifier, Classifier) else "running"
            task = progress.add_task(
                f"{verb} {Path(str(source)).name if len(source) < 80 else 'stream'}", total=None, fps=""
            )

            def on_frame(done: int, total: int | None, fps: float) -> None:
                progress.update(task, completed=done, total=total, fps=f"{fps:.1f} FPS")

            summary = run_stream(classifier, source, options, on_frame)
    report = summary.as_dict()
    json_to.write(report)
    print_summary(report)
    if summary.ended == "interrupted":  # the output is finished; Ctrl-C still exits 130 like every command
        raise typer.Exit(INTERRUPTED)


def print_summary(report: dict[str, Any]) -> None:
    if report.get("random_weights"):
        console.print(f"[yellow]{report['model']}: {RANDOM_WEIGHTS_NOTICE}[/yellow]")
    ms = report["ms_per_frame"]
    prep = f", {report['preprocessing']}" if report.get("preprocessing") else ""
    table = Table(title=f"{report['model']} on {report['source']} ({report['backend']}, batch {report['batch']}{prep})")
    for col in ("frames", "FPS", *ms, "total ms", "ended"):
        table.add_column(col if col in ("frames", "FPS", "total ms", "ended") else f"{col} ms", justify="right")
    table.add_row(
        str(report["frames"]),
        f"{report['fps']:.1f}",
        *(f"{v:.2f}" for v in ms.values()),
        f"{sum(ms.values()):.2f}",
        report["ended"],
    )
    console.print(table)
    top = list(report["top1"].items())[:5]
    if top:
        console.print("most frequent top-1: " + ", ".join(f"{label} ({n})" for label, n in top))
    print_outputs(report)
    for key, what in (("output", "annotated video"), ("log", "per-frame log")):
        if report[key]:
            console.print(f"{what}: {report[key]}")


def print_outputs(report: dict[str, Any]) -> None:
    """A model without logits: its outputs' shapes and max, and with a decoder the boxes found."""
    outputs = report.get("outputs")
    if outputs:
        console.print(
            "outputs: "
            + ", ".join(
                f"{name} {'x'.join(map(str, o['shape']))}" + ("" if o["max"] is None else f" (max {o['max']:.3g})")
                for name, o in outputs.items()
            )
        )
    found = report.get("detections")
    if found is None:
        return
    labels = ", ".join(f"{label} ({n})" for label, n in list(found["by_label"].items())[:5])
    counted = f"boxes: {found['total']} in {found['frames_with_detections']} frames"
    console.print(counted + (f": {labels}" if labels else ""))
    for d in found["best"][:3]:
        box = ", ".join(f"{v:.0f}" for v in d["box"])
        console.print(f"  frame {d['frame']}: {d['label']} {d['score']:.2f} at ({box})")

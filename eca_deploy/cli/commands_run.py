"""`eca-deploy run`: classify a video file, camera or stream and write or show the annotated frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from eca_deploy.cli.app import app
from eca_deploy.cli.console import console
from eca_deploy.cli.options import (
    PROVIDERS,
    JsonOutput,
    check_choice,
    check_file,
    check_onnx_file,
    json_option,
    parse_runtime,
    runtime_option,
)
from eca_deploy.errors import EcaDeployError


@app.command("run")
def run_command(
    source: str = typer.Option(..., "--source", "-s", help="Video file, camera index (0), URL, or GStreamer pipeline."),
    engine: Path | None = typer.Option(None, "--engine", help="TensorRT engine."),
    onnx_path: Path | None = typer.Option(None, "--onnx", help="ONNX model (ONNX Runtime)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the annotated video (.mp4, .mkv, .avi)."),
    max_frames: int | None = typer.Option(None, "--max-frames", help="Stop after N frames."),
    batch: int = typer.Option(1, "--batch", help="Frames per inference."),
    display: bool = typer.Option(False, "--display", help="Show the annotated frames in a window (q to stop)."),
    resize: str = typer.Option("exact", "--resize", help="exact (same pixels as check) or fast (OpenCV)."),
    labels: Path | None = typer.Option(None, "--labels", help="Class names, one per line (default: ImageNet)."),
    log: Path | None = typer.Option(None, "--log", help="Write each frame's top-5 as JSON lines."),
    provider: str = typer.Option("cpu", "--provider", help="ONNX Runtime provider: cpu, cuda or tensorrt."),
    runtime: str = runtime_option(),
    plugin: str | None = typer.Option(None, "--plugin", help="ECA plugin library (default: from the sidecar)."),
    json_out: str | None = json_option(),
) -> None:
    """Decode frames with OpenCV, classify them, overlay the top-1 label, score and FPS; summary at the end."""
    from eca_deploy.runtime.classifier import Classifier
    from eca_deploy.runtime.preprocess import RESIZE_MODES
    from eca_deploy.runtime.sources import parse_source
    from eca_deploy.runtime.video import RunOptions, run_stream

    if (onnx_path is None) == (engine is None):
        raise EcaDeployError("pass exactly one of --onnx MODEL.onnx or --engine MODEL.plan")
    json_to = JsonOutput.of(json_out)
    options = RunOptions(batch=batch, max_frames=max_frames, output=output, display=display, log=log)
    options.validate()
    check_onnx_file(onnx_path, "--onnx")
    check_file(engine, "--engine")
    check_file(labels, "--labels")
    check_choice(resize, "--resize", RESIZE_MODES)
    provider = check_choice(provider, "--provider", PROVIDERS)
    runtime = parse_runtime(runtime)
    parse_source(source)  # a missing file or unusable pipeline fails before the model loads
    model = onnx_path or engine
    classifier = Classifier.open(model, provider=provider, plugin=plugin, resize=resize, labels=labels,  # type: ignore[arg-type]
                                 kind="onnx" if onnx_path is not None else "engine",
                                 runtime=parse_runtime(runtime))  # fmt: skip
    if json_to.stdout:
        summary = run_stream(classifier, source, options)
    else:
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[fps]}"), TimeElapsedColumn()]  # fmt: skip
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(f"classifying {Path(str(source)).name if len(source) < 80 else 'stream'}",
                                     total=None, fps="")  # fmt: skip

            def on_frame(done: int, total: int | None, fps: float) -> None:
                progress.update(task, completed=done, total=total, fps=f"{fps:.1f} FPS")

            summary = run_stream(classifier, source, options, on_frame)
    report = summary.as_dict()
    json_to.write(report)
    print_summary(report)
    if summary.ended == "interrupted":  # the output is finished; Ctrl-C still exits 130 like every command
        from eca_deploy.cli.main import INTERRUPTED

        raise typer.Exit(INTERRUPTED)


def print_summary(report: dict[str, Any]) -> None:
    from eca_deploy.exporters.metadata import RANDOM_WEIGHTS_NOTICE

    if report.get("random_weights"):
        console.print(f"[yellow]{report['model']}: {RANDOM_WEIGHTS_NOTICE}[/yellow]")
    ms = report["ms_per_frame"]
    table = Table(title=f"{report['model']} on {report['source']} ({report['backend']}, batch {report['batch']})")
    for col in ("frames", "FPS", *ms, "total ms", "ended"):
        table.add_column(col if col in ("frames", "FPS", "total ms", "ended") else f"{col} ms", justify="right")
    table.add_row(str(report["frames"]), f"{report['fps']:.1f}", *(f"{v:.2f}" for v in ms.values()),
                  f"{sum(ms.values()):.2f}", report["ended"])  # fmt: skip
    console.print(table)
    top = list(report["top1"].items())[:5]
    if top:
        console.print("most frequent top-1: " + ", ".join(f"{label} ({n})" for label, n in top))
    for key, what in (("output", "annotated video"), ("log", "per-frame log")):
        if report[key]:
            console.print(f"{what}: {report[key]}")

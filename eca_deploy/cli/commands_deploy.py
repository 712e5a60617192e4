"""`eca-deploy deploy`: one command from checkpoint to a folder of artifacts and a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from eca_deploy.cli.app import app
from eca_deploy.cli.console import console, warn
from eca_deploy.cli.groups import (
    BatchSizes,
    CalibCount,
    Duration,
    Force,
    Images,
    ImgSize,
    Interpolation,
    Json,
    Mean,
    Model,
    OptionalCalibImages,
    OptionalOnnx,
    OutFolder,
    Pretrained,
    ResizeMode,
    Rounds,
    Runtime,
    Std,
    TrustCheckpoint,
    Weights,
)
from eca_deploy.cli.options import (
    JsonOutput,
    PreprocessingFlags,
    check_onnx_file,
    parse_duration,
    parse_img_size,
    parse_sizes,
)
from eca_deploy.deploy.recommend import several_runtimes
from eca_deploy.deploy.report import SummaryRow, recommend, recommendation, side_by_side_rows, summary_rows
from eca_deploy.deploy.summary import DeploySummary, runtime_label
from eca_deploy.errors import CheckFailedError, EcaDeployError
from eca_deploy.exporters.metadata import onnx_interface, random_weights_notice
from eca_deploy.fileio import allow_replacing
from eca_deploy.onnx_io import load_onnx
from eca_deploy.pipeline.bench import DEFAULT_ROUNDS

# deploy.run imports torch and onnx: imported in the command, so `--help` stays light.


@app.command("deploy")
def deploy_command(
    model: Model = "eca_mobilenetv2",
    weights: Weights = None,
    pretrained: Pretrained = False,
    onnx_path: OptionalOnnx = None,
    mean: Mean = None,
    std: Std = None,
    interpolation: Interpolation = None,
    resize_mode: ResizeMode = None,
    precisions: str = typer.Option("fp32,fp16", "--precisions", help="Any of fp32,fp16,int8."),
    calib_images: OptionalCalibImages = None,
    calib_count: CalibCount = 512,
    images: Images = None,
    batches: BatchSizes = "1,8,32",
    img_size: ImgSize = None,
    duration: Duration = "3s",
    rounds: Rounds = DEFAULT_ROUNDS,
    out: OutFolder = Path("deploy"),
    force: Force = False,
    runtime: Runtime = "auto",
    trust_checkpoint: TrustCheckpoint = False,
    json_out: Json = None,
) -> None:
    """Export, fuse, convert/quantize, build (with TensorRT), check and bench; cached; with report.md.

    --onnx starts from an ONNX made by any exporter instead of --model (checks compare with it); --mean/--std/
    --interpolation/--resize-mode describe that ONNX. --force redoes every stage, even those up to date.
    """
    allow_replacing(force)
    from eca_deploy.deploy.run import DeployOptions, run_deploy

    check_onnx_file(onnx_path, "--onnx")
    json_to = JsonOutput.of(json_out, inputs=[onnx_path, weights, images, calib_images])
    size = parse_img_size(img_size)
    flags = PreprocessingFlags.of(mean, std, interpolation, resize_mode)
    prep = None
    if onnx_path is not None and (size is not None or flags.given):
        interface = onnx_interface(
            load_onnx(onnx_path), label=str(onnx_path), img_size=size, warn=warn, adjust=flags.adjust
        )
        prep = interface.preprocessing
    elif onnx_path is None and flags.given:
        raise EcaDeployError(
            "--mean/--std/--interpolation/--resize-mode describe an ONNX given with --onnx; --model takes its own"
        )
    opts = DeployOptions(
        model=model, out=out, weights=weights, precisions=tuple(p.strip() for p in precisions.split(",") if p.strip()),
        calib_images=calib_images, calib_count=calib_count, images=images, batches=parse_sizes(batches),
        img_size=size, bench_seconds=parse_duration(duration, "--duration"), bench_rounds=rounds, force=force,
        pretrained=pretrained, onnx=onnx_path, preprocessing=prep, runtime=runtime.strip().lower(),
        trust_checkpoint=trust_checkpoint,
    )  # fmt: skip
    # run_deploy validates every option (DeployOptions.validate) before the first stage and before --out exists

    def on_stage(name: str, what: str) -> Any:
        return console.status(f"[bold]{name}[/bold]: {what}")

    def on_done(outcome: Any) -> None:
        if outcome.skipped:
            console.print(f"[dim]= {outcome.name}: up to date, skipped[/dim]")
        else:
            console.print(f"[green]✓[/green] {outcome.name} ({outcome.seconds:.1f} s)")

    quiet = json_to.stdout
    result = run_deploy(opts, on_stage=None if quiet else on_stage, on_done=None if quiet else on_done, note=warn)
    summary = result.summary
    rows = summary_rows(summary)
    for message in summary.bench.noise.warnings:
        warn(message)
    stages = [{"name": s.name, "skipped": s.skipped, "seconds": s.seconds} for s in result.stages]
    choice = recommend(rows)  # per batch size, the fastest runtime x precision that passed its check
    json_to.write(
        {
            "out": str(out),
            "passed": result.passed,
            "random_weights": summary.random_weights,
            "recommendation": choice.as_dict(),
            "noise": summary.bench.noise.as_dict(),
            "rows": [r.as_dict() for r in rows],
            "stages": stages,
        }
    )
    print_summary(summary, rows, out)
    if not result.passed:
        failed = [r.precision for r in rows if not r.passed]
        raise CheckFailedError(f"{', '.join(failed)} outside tolerance: see {out / 'report.md'}")


def print_summary(summary: DeploySummary, rows: list[SummaryRow], out: Path) -> None:
    """The verdict table of every precision on every runtime that ran (the title names them all), then the
    side-by-side speed table, what to ship, and anything the checks say aloud."""
    if summary.random_weights:
        console.print(f"[yellow]{summary.model} has {random_weights_notice(summary.interface)}[/yellow]")
    batches = sorted({b for r in rows for b in r.images_per_s})
    size = summary.input_size
    at = f", {size[0]}x{size[1]}" if size else ""
    many = several_runtimes(rows)
    outputs = len(rows[0].outputs) > 1 if rows else False
    table = Table(title=f"{summary.model} on {summary.backend_label}{at}")
    columns = ["precision", *(["runtime"] if many else []), "verdict", "top-1", "cosine", "max err",
               *(["worst output"] if outputs else []), "p50 ms @1", "p99 ms @1"]  # fmt: skip
    for col in columns:
        table.add_column(col, justify="right")
    for b in batches:
        table.add_column(f"img/s @{b}", justify="right")
    first = batches[0]
    for r in rows:
        table.add_row(
            r.precision,
            *([runtime_label(r.runtime or "")] if many else []),
            "[green]pass[/green]" if r.passed else "[red]FAIL[/red]",
            "-" if r.top1_agreement is None else f"{r.top1_agreement:.1%}",
            f"{r.cosine_min:.5f}",
            f"{r.max_abs_error:.3g}",
            *([r.output] if outputs else []),
            f"{r.p50_ms[first]:.2f}",
            f"{r.p99_ms[first]:.2f}",
            *(r.throughput.get(b, "n/a") for b in batches),
        )
    console.print(table)
    side = side_by_side_rows(summary)
    if side:
        names = summary.runtimes
        st = Table(title=f"{' vs '.join(names)}: images/s, interleaved rounds (median, min..max)")
        for col in ("precision", "batch", *names, f"{names[1]} / {names[0]}", *(f"check {n}" for n in names)):
            st.add_column(col, justify="right")
        for r in side:
            st.add_row(r.precision, str(r.batch), *r.cells, r.ratio, *r.checks)
        console.print(st)
    for note in dict.fromkeys(n for r in rows for n in r.notes):
        warn(note)
    console.print(recommendation(rows).replace("**", ""))
    console.print(f"report: {out / 'report.md'} (and report.html); manifest: {out / 'manifest.json'}")

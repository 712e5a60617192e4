"""`eca-deploy bench`: throughput and latency of ONNX models and TensorRT engines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from eca_deploy.cli.app import app
from eca_deploy.cli.console import console, warn
from eca_deploy.cli.options import (
    JsonOutput,
    check_at_least,
    check_file,
    check_outputs,
    json_option,
    parse_duration,
    parse_runtime,
    parse_sizes,
    runtime_option,
)
from eca_deploy.errors import EcaDeployError
from eca_deploy.fileio import atomic_write, atomic_write_text
from eca_deploy.pipeline.bench_noise import compare_rounds


@app.command("bench")
def bench_command(
    onnx_path: Path | None = typer.Option(None, "--onnx", help="ONNX model (ONNX Runtime)."),
    engine: Path | None = typer.Option(None, "--engine", help="TensorRT engine."),
    compare: bool = typer.Option(False, "--compare", help="Side-by-side table of the models given as arguments."),
    models_args: list[Path] | None = typer.Argument(
        None, help="Models to compare (with --compare).", show_default=False
    ),
    provider: str = typer.Option("cpu", "--provider", help="ONNX Runtime provider: cpu, cuda or tensorrt."),
    runtime: str = runtime_option(),
    batch: str = typer.Option("1,8,32", "--batch", help="Batch sizes, comma-separated."),
    img_size: int | None = typer.Option(None, "--img-size", help="Input size if the model's is dynamic."),
    warmup: str = typer.Option("2s", "--warmup", help="Warm-up time per batch size."),
    duration: str = typer.Option("10s", "--duration", help="Measuring time per batch size."),
    iterations: int | None = typer.Option(None, "--iterations", help="Measure exactly N iterations instead."),
    threads: int | None = typer.Option(None, "--threads", help="ONNX Runtime intra-op (or OpenVINO) threads."),
    cuda_graph: bool = typer.Option(False, "--cuda-graph", help="TensorRT: replay the step as a CUDA graph."),
    streams: int = typer.Option(1, "--streams", help="TensorRT: concurrent streams."),
    no_transfers: bool = typer.Option(False, "--no-transfers", help="TensorRT: time GPU compute alone."),
    plugin: str | None = typer.Option(None, "--plugin", help="ECA plugin library for engines."),
    end_to_end: bool = typer.Option(False, "--end-to-end", help="Time preprocess + inference + postprocess on photos."),
    rounds: int = typer.Option(5, "--rounds", help="Measuring rounds per figure, interleaved across models."),
    json_out: str | None = json_option(),
    csv_path: Path | None = typer.Option(None, "--csv", help="Write one row per model and batch size."),
    plot_path: Path | None = typer.Option(None, "--plot", help="Draw latency and throughput vs batch (PNG)."),
) -> None:
    """Measure throughput and latency percentiles per batch size (like trtexec), on any backend."""
    from eca_deploy.backends.base import StepOptions
    from eca_deploy.pipeline.bench import BenchConfig
    from eca_deploy.pipeline.bench_report import run_bench, write_csv, write_plot

    json_to = JsonOutput.of(json_out)
    check_outputs((csv_path, "--csv"), (plot_path, "--plot"))
    check_file(onnx_path, "--onnx")
    check_file(engine, "--engine")
    for path in models_args or []:
        check_file(path, "--compare")
    for value, option in ((iterations, "--iterations"), (threads, "--threads"), (streams, "--streams"),
                          (rounds, "--rounds")):  # fmt: skip
        check_at_least(value, option)
    models = list(models_args or [])
    if models and not compare:
        raise EcaDeployError("several models are compared with --compare A B ...; a single one takes --onnx/--engine")
    kinds: list[str | None] = [None] * len(models)  # --compare: each file's content decides
    if onnx_path:
        models.insert(0, onnx_path)
        kinds.insert(0, "onnx")
    if engine:
        models.insert(0, engine)
        kinds.insert(0, "engine")
    if not models:
        raise EcaDeployError("nothing to benchmark: pass --onnx MODEL.onnx, --engine MODEL.plan or --compare A B ...")
    runtime = parse_runtime(runtime)
    config = BenchConfig(
        batches=parse_sizes(batch),
        warmup_s=parse_duration(warmup, "--warmup", allow_zero=True),
        duration_s=parse_duration(duration, "--duration") if iterations is None else None,
        iterations=iterations,
        step=StepOptions(transfers=not no_transfers, cuda_graph=cuda_graph, streams=streams),
        end_to_end=end_to_end,
        rounds=rounds,
    )
    config.validate()
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console,
                  transient=True, disable=json_to.stdout) as progress:  # fmt: skip

        def on_batch(label: str) -> Any:
            def start(b: int) -> Any:
                task = progress.add_task(f"{label} batch {b}", total=1.0)
                return lambda frac: progress.update(task, completed=frac)

            return start

        report = run_bench(models, config, kinds=kinds, provider=provider, threads=threads, img_size=img_size,
                           plugin=plugin, on_batch=on_batch, runtime=runtime)  # fmt: skip
    print_tables(report)
    for message in report["noise"]["warnings"]:
        warn(message)
    json_to.write(report)
    if csv_path:
        atomic_write_text(csv_path, write_csv(report))
    if plot_path:
        atomic_write(plot_path, lambda tmp: write_plot(report, tmp))


def print_tables(report: dict[str, Any]) -> None:
    for entry in report["models"]:
        table = Table(title=f"{entry['model']} ({entry['backend']}, {entry['precision']})")
        cols = ["batch", "images/s", "rounds min-max", "infer/s", "min", "mean", "median", "p90", "p95", "p99", "max"]
        for col in cols:
            table.add_column(col + (" ms" if col in ("min", "mean", "median", "p90", "p95", "p99", "max") else ""),
                             justify="right")  # fmt: skip
        for r in entry["results"]:
            lat = r["latency_ms"]
            spread = r.get("spread")
            span = f"{spread['min']:.1f}-{spread['max']:.1f} ({spread['relative']:.0%})" if spread else "one round"
            row = [str(r["batch"]), f"{r['images_per_s']:.1f}", span, f"{r['inferences_per_s']:.1f}"]
            row += [f"{lat[k]:.3f}" for k in ("min", "mean", "median", "p90", "p95", "p99", "max")]
            table.add_row(*row)
        console.print(table)
        print_stages(entry)
    if len(report["models"]) > 1:
        first = report["models"][0]
        table = Table(title=f"throughput (images/s, median of rounds), speed-up against {first['model']}")
        table.add_column("batch", justify="right")
        for entry in report["models"]:
            table.add_column(entry["model"], justify="right")
        for i, r0 in enumerate(first["results"]):
            cells = [str(r0["batch"])]
            for entry in report["models"]:
                r = entry["results"][i]
                cell = f"{r['images_per_s']:.1f} ({r['images_per_s'] / r0['images_per_s']:.2f}x)"
                if entry is not first and compare_rounds(r["rounds"], r0["rounds"]) == 0:
                    cell += " within noise"
                cells.append(cell)
            table.add_row(*cells)
        console.print(table)
        console.print(f"{report['config']['rounds']} interleaved rounds per figure; 'within noise': the rounds of "
                      "the two models overlap, so neither is measurably faster")  # fmt: skip


def print_stages(entry: dict[str, Any]) -> None:
    """Mean time per stage: H2D / compute / D2H (TensorRT) and preprocess / inference / postprocess (end to end)."""
    groups = [("split_ms", ("h2d_ms", "compute_ms", "d2h_ms"), ("H2D", "compute", "D2H")),
              ("stages_ms", ("preprocess_ms", "inference_ms", "postprocess_ms"),
               ("preprocess", "inference", "postprocess"))]  # fmt: skip
    for key, fields, names in groups:
        if not any(r.get(key) for r in entry["results"]):
            continue
        table = Table(title=f"{entry['model']}: mean ms per stage")
        table.add_column("batch", justify="right")
        for name in names:
            table.add_column(f"{name} ms", justify="right")
        for r in entry["results"]:
            values = r.get(key) or {}
            table.add_row(str(r["batch"]), *(f"{values.get(f, float('nan')):.3f}" for f in fields))
        console.print(table)

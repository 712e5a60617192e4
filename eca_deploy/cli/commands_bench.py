"""`eca-deploy bench`: throughput and latency of ONNX models and TensorRT engines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from eca_deploy.backends.base import StepOptions
from eca_deploy.backends.handle import guess_kind
from eca_deploy.cli.app import app
from eca_deploy.cli.console import console, warn
from eca_deploy.cli.groups import (
    BatchSizes,
    Duration,
    Engine,
    Force,
    ImgSize,
    Interpolation,
    Json,
    Mean,
    OptionalOnnx,
    Plugin,
    Provider,
    ResizeMode,
    Rounds,
    Runtime,
    Std,
    Threads,
)
from eca_deploy.cli.options import (
    JsonOutput,
    PreprocessingFlags,
    check_at_least,
    check_file,
    check_outputs,
    parse_duration,
    parse_img_size,
    parse_runtime,
    parse_sizes,
)
from eca_deploy.errors import EcaDeployError
from eca_deploy.fileio import allow_replacing, atomic_write, atomic_write_text
from eca_deploy.pipeline.bench import DEFAULT_ROUNDS, BenchConfig
from eca_deploy.pipeline.bench_noise import speed_ratio
from eca_deploy.pipeline.bench_report import LOWERING_CHOICES, run_bench, write_csv, write_plot
from eca_deploy.pipeline.records import BenchEntry, BenchRecord


@app.command("bench")
def bench_command(
    onnx_path: OptionalOnnx = None,
    engine: Engine = None,
    compare: bool = typer.Option(False, "--compare", help="Side-by-side table of the models given as arguments."),
    models_args: list[Path] | None = typer.Argument(
        None, help="Models to compare (with --compare).", show_default=False
    ),
    provider: Provider = "cpu",
    runtime: Runtime = "onnxruntime",
    batches: BatchSizes = "1,8,32",
    img_size: ImgSize = None,
    warmup: str = typer.Option("2s", "--warmup", help="Warm-up time per batch size."),
    duration: Duration = "10s",
    iterations: int | None = typer.Option(None, "--iterations", help="Measure exactly N iterations instead."),
    threads: Threads = None,
    cuda_graph: bool = typer.Option(False, "--cuda-graph", help="TensorRT: replay the step as a CUDA graph."),
    streams: int = typer.Option(1, "--streams", help="TensorRT: concurrent streams."),
    no_transfers: bool = typer.Option(False, "--no-transfers", help="TensorRT: time GPU compute alone."),
    plugin: Plugin = None,
    end_to_end: bool = typer.Option(False, "--end-to-end", help="Time preprocess + inference + postprocess on photos."),
    mean: Mean = None,
    std: Std = None,
    interpolation: Interpolation = None,
    resize_mode: ResizeMode = None,
    lowering: str = typer.Option(
        "auto", "--lowering", help="OpenVINO, fused models: auto (time the candidates, use the fastest), op or opset."
    ),
    unfused: list[str] | None = typer.Option(
        None, "--unfused", help="FUSED=UNFUSED: with --lowering auto, time the unfused twin as a candidate too."
    ),
    rounds: Rounds = DEFAULT_ROUNDS,
    json_out: Json = None,
    force: Force = False,
    csv_path: Path | None = typer.Option(None, "--csv", help="Write one row per model and batch size."),
    plot_path: Path | None = typer.Option(None, "--plot", help="Draw latency and throughput vs batch (PNG)."),
) -> None:
    """Measure throughput and latency percentiles per batch size (like trtexec), on any backend.

    --mean/--std/--interpolation/--resize-mode preprocess the photos of --end-to-end.
    """
    allow_replacing(force)
    size = parse_img_size(img_size)
    flags = PreprocessingFlags.of(mean, std, interpolation, resize_mode)
    if flags.given and not end_to_end:
        raise EcaDeployError(
            "--mean/--std/--interpolation/--resize-mode preprocess photos: add --end-to-end (without "
            "it bench feeds random tensors)"
        )
    check_file(onnx_path, "--onnx")
    check_file(engine, "--engine")
    for path in models_args or []:
        check_file(path, "--compare")
    for value, option in ((iterations, "--iterations"), (threads, "--threads"), (streams, "--streams"),
                          (rounds, "--rounds")):  # fmt: skip
        check_at_least(value, option)
    inputs = [onnx_path, engine, plugin, *(models_args or [])]
    json_to = JsonOutput.of(json_out, inputs=inputs)
    check_outputs((csv_path, "--csv"), (plot_path, "--plot"), (json_to.path, "--json"), inputs=inputs)
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
    runtimes = list(dict.fromkeys(parse_runtime(r) for r in runtime.split(",") if r.strip())) or ["onnxruntime"]
    per_model: list[str] = []
    if len(runtimes) > 1:  # every ONNX model on each runtime, one after the other, all in the same rounds
        models, kinds, per_model = expand_runtimes(models, kinds, runtimes)
    config = BenchConfig(
        batches=parse_sizes(batches),
        warmup_s=parse_duration(warmup, "--warmup", allow_zero=True),
        duration_s=parse_duration(duration, "--duration") if iterations is None else None,
        iterations=iterations,
        step=StepOptions(transfers=not no_transfers, cuda_graph=cuda_graph, streams=streams),
        end_to_end=end_to_end,
        rounds=rounds,
        adjust=flags.adjust,
        warn=warn,
    )
    config.validate()
    twins = parse_twins(unfused or [])
    if lowering.strip().lower() not in LOWERING_CHOICES:
        raise EcaDeployError(f"--lowering must be one of {', '.join(LOWERING_CHOICES)}, got {lowering!r}")
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=json_to.stdout,
    ) as progress:

        def on_batch(label: str) -> Any:
            def start(b: int) -> Any:
                task = progress.add_task(f"{label} batch {b}", total=1.0)
                return lambda frac: progress.update(task, completed=frac)

            return start

        report = run_bench(models, config, kinds=kinds, provider=provider, threads=threads, img_size=size,
                           plugin=plugin, on_batch=on_batch, runtime=runtimes[0],
                           runtimes=per_model or None, lowering=lowering.strip().lower(),
                           unfused=twins)  # fmt: skip
    record = BenchRecord.from_dict(report)
    print_tables(record)
    for message in record.noise.warnings:
        warn(message)
    json_to.write(report)
    if csv_path:
        atomic_write_text(csv_path, write_csv(record))
    if plot_path:
        atomic_write(plot_path, lambda tmp: write_plot(record, tmp))


def parse_twins(values: list[str]) -> dict[str, Path]:
    """['model.fused.onnx=model.onnx'] -> {fused path: unfused path}, both files checked."""
    twins = {}
    for value in values:
        fused, sep, plain = value.partition("=")
        if not sep or not fused or not plain:
            raise EcaDeployError(f"--unfused takes FUSED=UNFUSED (two ONNX files), got {value!r}")
        for path in (fused, plain):
            if not Path(path).is_file():
                raise EcaDeployError(f"--unfused: ONNX file {path} does not exist")
        twins[str(Path(fused))] = Path(plain)
    return twins


def expand_runtimes(models: list[Path], kinds: list[str | None], runtimes: list[str]) -> tuple[list, list, list]:
    """(models, kinds, runtime per model): each ONNX model once per runtime, in order; engines once."""
    out: tuple[list[Path], list[str | None], list[str]] = ([], [], [])
    for path, kind in zip(models, kinds, strict=True):
        onnx_model = (kind or guess_kind(path)) == "onnx"
        for rt in runtimes if onnx_model else runtimes[:1]:
            out[0].append(path)
            out[1].append(kind)
            out[2].append(rt)
    return out


def print_tables(report: BenchRecord) -> None:
    for entry in report.models:
        table = Table(title=f"{entry.model} ({entry.backend}, {entry.precision}{settings_text(entry)})")
        cols = ["batch", "images/s", "rounds min-max", "infer/s", "min", "mean", "median", "p90", "p95", "p99", "max"]
        for col in cols:
            table.add_column(
                col + (" ms" if col in ("min", "mean", "median", "p90", "p95", "p99", "max") else ""), justify="right"
            )
        for r in entry.results:
            lat = r.latency_ms
            spread = r.spread
            span = f"{spread.min:.1f}-{spread.max:.1f} ({spread.relative:.0%})" if spread else "one round"
            row = [str(r.batch), f"{r.images_per_s:.1f}", span, f"{r.inferences_per_s:.1f}"]
            row += [f"{v:.3f}" for v in (lat.min, lat.mean, lat.median, lat.p90, lat.p95, lat.p99, lat.max)]
            table.add_row(*row)
        console.print(table)
        for r in entry.results:
            if r.tactic:
                console.print(f"  batch {r.batch}: ECA lowering chosen by measurement: {r.tactic.text}")
        print_stages(entry)
    if len(report.models) > 1:
        first = report.models[0]
        console.print(f"throughput (images/s, median of rounds), speed-up against {first.model}:")
        table = Table()
        table.add_column("batch", justify="right")
        for entry in report.models:
            table.add_column(entry.model, justify="right")
        for i, r0 in enumerate(first.results):
            cells = [str(r0.batch)]
            for entry in report.models:
                r = entry.results[i]
                # the ratio of the medians shown, its per-round range, and the within-noise verdict
                ratio = "1.00x" if entry is first else speed_ratio(r.rounds, r0.rounds).text()
                cells.append(f"{r.images_per_s:.1f} ({ratio})")
            table.add_row(*cells)
        console.print(table)
        console.print(
            f"{report.config.rounds} interleaved rounds per figure; 'within noise': the rounds of "
            "the two models overlap, so neither is measurably faster"
        )


def settings_text(entry: BenchEntry) -> str:
    """', input 224x224' (end to end: the preprocessing phrase) and, for OpenVINO entries,
    ', INFERENCE_PRECISION_HINT f32, 2 threads'; for a fused model on ONNX Runtime how its ECA nodes ran."""
    settings = entry.runtime_settings
    shape = settings.get("input")
    parts = [f"input {shape[-2]}x{shape[-1]}"] if shape and len(shape) >= 2 else []
    if settings.get("preprocessing"):
        parts.append(settings["preprocessing"])
    if settings.get("inference_precision"):
        parts.append(f"INFERENCE_PRECISION_HINT {settings['inference_precision']}")
    if settings.get("threads"):
        parts.append(f"{settings['threads']} threads")
    if settings.get("eca_lowering"):
        parts.append(f"ECA lowering {settings['eca_lowering']}")
    if settings.get("eca_implementation"):
        parts.append(f"ECA {settings['eca_implementation']}")
    return "".join(f", {p}" for p in parts)


def print_stages(entry: BenchEntry) -> None:
    """Mean time per stage: H2D / compute / D2H (TensorRT) and preprocess / inference / postprocess (end to end)."""
    groups = [([r.split_ms for r in entry.results], ("h2d_ms", "compute_ms", "d2h_ms"), ("H2D", "compute", "D2H")),
              ([r.stages_ms for r in entry.results], ("preprocess_ms", "inference_ms", "postprocess_ms"),
               ("preprocess", "inference", "postprocess"))]  # fmt: skip
    for per_batch, fields, names in groups:
        if not any(per_batch):
            continue
        table = Table(title=f"{entry.model}: mean ms per stage")
        table.add_column("batch", justify="right")
        for name in names:
            table.add_column(f"{name} ms", justify="right")
        for r, values in zip(entry.results, per_batch, strict=True):
            table.add_row(str(r.batch), *(f"{(values or {}).get(f, float('nan')):.3f}" for f in fields))
        console.print(table)

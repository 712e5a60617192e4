"""Run `bench` over one or more models and turn the results into JSON, CSV and a plot."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eca_deploy import environment
from eca_deploy.pipeline.bench import BenchConfig, bench_runner


def run_bench(
    models: Sequence[Path],
    config: BenchConfig,
    *,
    provider: str = "cpu",
    threads: int | None = None,
    img_size: int | None = None,
    plugin: str | None = None,
    on_batch: Callable[[str], Callable[[int], Callable[[float], None]]] | None = None,
    runtime: str = "onnxruntime",
) -> dict[str, Any]:
    """Benchmark each model (ONNX on ONNX Runtime or `runtime`, anything else as a TensorRT engine)."""
    from eca_deploy.backends.loader import looks_like_onnx, open_engine, open_onnx

    entries = []
    for path in models:
        if looks_like_onnx(path) or not path.exists():
            runner, _, precision = open_onnx(path, provider, threads=threads, runtime=runtime)
            backend = f"{runner.name}-{provider}"
        else:
            runner = open_engine(path, plugin)
            precision = getattr(getattr(runner, "sidecar", None), "precision", "unknown")
            backend = "tensorrt"
        results = bench_runner(runner, config, img_size, on_batch(path.name) if on_batch else None)
        entries.append({
            "model": path.name,
            "path": str(path),
            "backend": backend,
            "precision": precision,
            "results": [r.as_dict() for r in results],
        })  # fmt: skip
    return {
        "config": {
            "batches": list(config.batches),
            "warmup_s": config.warmup_s,
            "duration_s": None if config.iterations else config.duration_s,
            "iterations": config.iterations,
            "transfers": config.step.transfers,
            "cuda_graph": config.step.cuda_graph,
            "streams": config.step.streams,
        },
        "environment": environment.collect(threads),
        "models": entries,
    }


def run_bench_side_by_side(path: Path, config: BenchConfig, runtimes: Sequence[str], rounds: int = 3) -> dict[str, Any]:
    """One ONNX model on several runtimes (e.g. onnxruntime, openvino), timed in interleaved rounds.

    The report has `run_bench`'s layout, one entry per runtime; results add `rounds_images_per_s` and
    `ratio_to_first` (images/s over the first runtime's, per round).
    """
    from eca_deploy.backends.loader import open_onnx
    from eca_deploy.pipeline.bench_interleaved import bench_interleaved

    opened = {r: open_onnx(path, runtime=r) for r in runtimes}
    by_runtime = bench_interleaved({r: runner for r, (runner, _, _) in opened.items()}, config, rounds=rounds)
    entries = [{"model": path.name, "path": str(path), "backend": f"{r}-cpu", "precision": opened[r][2],
                "results": by_runtime[r]} for r in runtimes]  # fmt: skip
    return {"config": {"batches": list(config.batches), "warmup_s": config.warmup_s, "duration_s": config.duration_s,
                       "rounds": rounds, "interleaved": True},
            "environment": environment.collect(None), "models": entries}  # fmt: skip


CSV_FIELDS = ["model", "backend", "precision", "batch", "iterations", "images_per_s", "inferences_per_s",
              "min_ms", "mean_ms", "median_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "h2d_ms", "compute_ms",
              "d2h_ms"]  # fmt: skip


def write_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for entry in report["models"]:
        for r in entry["results"]:
            row = {"model": entry["model"], "backend": entry["backend"], "precision": entry["precision"]}
            row |= {k: r[k] for k in ("batch", "iterations", "images_per_s", "inferences_per_s")}
            row |= {f"{k}_ms": v for k, v in r["latency_ms"].items()}
            row |= r["split_ms"] or {}
            writer.writerow(row)
    return buf.getvalue()


def write_plot(report: dict[str, Any], path: Path) -> None:
    """Throughput and latency (median, p99 whisker) against batch size, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(11, 4.2))
    for entry in report["models"]:
        batches = [r["batch"] for r in entry["results"]]
        label = f"{entry['model']} ({entry['precision']})"
        ax_t.plot(batches, [r["images_per_s"] for r in entry["results"]], marker="o", label=label)
        median = [r["latency_ms"]["median"] for r in entry["results"]]
        p99 = [r["latency_ms"]["p99"] - r["latency_ms"]["median"] for r in entry["results"]]
        ax_l.errorbar(batches, median, yerr=[[0] * len(p99), p99], marker="o", capsize=3, label=label)
    all_batches = sorted({r["batch"] for e in report["models"] for r in e["results"]})
    for ax, ylabel in ((ax_t, "images / s"), (ax_l, "latency ms (median, whisker to p99)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_batches, [str(b) for b in all_batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    ax_t.legend(fontsize=8)
    env = report["environment"]
    fig.suptitle(f"eca-deploy bench on {(env.get('gpu') or {}).get('name') or env['cpu']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)

"""Run `bench` over one or more models and turn the results into JSON, CSV and a plot."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from eca_deploy import environment
from eca_deploy.backends.base import Runner
from eca_deploy.backends.handle import ModelSpec, open_model
from eca_deploy.errors import EcaDeployError
from eca_deploy.ops import has_eca_nodes
from eca_deploy.pipeline.bench import BenchConfig, bench_runners, end_to_end_model, input_shape
from eca_deploy.pipeline.bench_noise import busy_warning, cpu_sample, fastest, machine_load, speed_ratio, spread_warning
from eca_deploy.pipeline.records import BenchRecord, Spread

LOWERING_CHOICES = ("auto", "op", "opset")  # bench --lowering: OpenVINO's conversion of eca_deploy.ECA nodes
CANDIDATES = {"unfused": None, "fused-op": "op", "fused-opset": "opset"}  # auto: name -> lowering timed


def candidates(path: Path, kind: str | None, runtime: str, lowering: str, unfused: Path | None) -> list[tuple]:
    """(candidate name or None, file, lowering) to time for one model: several only for a fused model on OpenVINO
    with `lowering` "auto" (the unfused twin, when known, and both conversions of the ECA nodes)."""
    if runtime != "openvino" or kind == "engine" or not path.is_file():
        return [(None, path, None)]
    import onnx

    try:
        fused = has_eca_nodes(onnx.load(str(path), load_external_data=False))
    except Exception:  # not ONNX: opening it says why, with a one-line error
        return [(None, path, None)]
    if not fused:
        return [(None, path, None)]
    if lowering != "auto":
        return [(None, path, lowering)]
    named = [(name, unfused if low is None else path, low) for name, low in CANDIDATES.items()]
    return [c for c in named if c[1] is not None]


def choose_fastest(by_candidate: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per batch size, the result of the fastest candidate (by median of its rounds), with a `tactic` record:
    which won, by how much over the runner-up, and whether beyond the noise (`bench_noise.fastest`)."""
    names = list(by_candidate)
    chosen = []
    for i in range(len(by_candidate[names[0]])):
        at = {n: by_candidate[n][i] for n in names}
        pick = fastest({n: r.get("rounds") or [r["images_per_s"]] for n, r in at.items()})
        result = dict(at[pick.name])
        result["tactic"] = {
            "chosen": pick.name, "runner_up": pick.runner_up, "margin": pick.margin,
            "beyond_noise": pick.beyond_noise, "tied": list(pick.tied), "text": pick.text(),
            "candidates": {n: {"images_per_s": r["images_per_s"], "rounds": r.get("rounds")} for n, r in at.items()},
        }  # fmt: skip
        chosen.append(result)
    return chosen


def run_bench(
    models: Sequence[Path],
    config: BenchConfig,
    *,
    kinds: Sequence[str | None] | None = None,
    provider: str = "cpu",
    threads: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    plugin: str | None = None,
    on_batch: Callable[[str], Callable[[int], Callable[[float], None]]] | None = None,
    runtime: str = "onnxruntime",
    runtimes: Sequence[str] | None = None,
    lowering: str = "auto",
    unfused: Mapping[str, Path] | None = None,
) -> dict[str, Any]:
    """Benchmark the models in interleaved rounds; `kinds` says per model "onnx", "engine" or None (guess).

    ONNX models run on `runtime`, or per model on `runtimes` (the same file may appear once per runtime).
    A fused model on OpenVINO with `lowering` "auto" is timed as several candidates in the same rounds (its
    unfused twin from `unfused`, keyed by the fused file's path, and both ECA conversions); its figures are the
    fastest candidate's per batch size, with a `tactic` record saying which and by how much.
    """
    if lowering not in LOWERING_CHOICES:
        raise EcaDeployError(f"--lowering must be one of {', '.join(LOWERING_CHOICES)}, got {lowering!r}")
    per_model = list(runtimes) if runtimes else [runtime] * len(models)
    kinds = list(kinds or [None] * len(models))
    twins = {str(k): v for k, v in (unfused or {}).items()}
    specs = [
        (i, *c)
        for i, (p, k, r) in enumerate(zip(models, kinds, per_model, strict=True))
        for c in candidates(p, k, r, lowering, twins.get(str(p)))
    ]
    opened = [open_model(ModelSpec(path, kind=kinds[i], runtime=per_model[i], provider=provider, threads=threads,
                                   plugin=None if plugin is None else Path(plugin), eca_lowering=low))
              for i, _, path, low in specs]  # fmt: skip
    callbacks = (
        [on_batch(models[i].name + (f" [{name}]" if name else "")) for i, name, _, _ in specs] if on_batch else None
    )
    before = cpu_sample()
    results = bench_runners([o.runner for o in opened], config, img_size, callbacks)
    load = machine_load(before, cpu_sample())
    entries = []
    for i, path in enumerate(models):
        mine = [j for j, spec in enumerate(specs) if spec[0] == i]
        model = opened[mine[-1]]  # the model itself (the unfused twin comes first)
        entry: dict[str, Any] = {"model": path.name, "path": str(path), "backend": model.backend,
                                 "precision": model.precision or "unknown",
                                 "runtime_settings": runtime_settings(model.runner, config, img_size)}  # fmt: skip
        if len(mine) > 1:
            entry["runtime_settings"]["eca_lowering"] = "fastest of " + ", ".join(specs[j][1] for j in mine)
            entry["results"] = choose_fastest({specs[j][1]: [r.as_dict() for r in results[j]] for j in mine})
        else:
            entry["results"] = [r.as_dict() for r in results[mine[0]]]
        entries.append(entry)
    for path in dict.fromkeys(str(p) for p in models):  # one file on several runtimes: ratios per round
        same = [e for e in entries if e["path"] == path]
        if len(same) > 1:
            add_ratios(same)
    warnings = [w for w in (busy_warning(load), spread_warning(entries)) if w]
    return {
        "config": {
            "batches": list(config.batches),
            "warmup_s": config.warmup_s,
            "duration_s": None if config.iterations else config.duration_s,
            "iterations": config.iterations,
            "rounds": len(config.round_budgets()),
            "transfers": config.step.transfers,
            "cuda_graph": config.step.cuda_graph,
            "streams": config.step.streams,
            "lowering": lowering,
        },
        "environment": environment.collect(threads),
        "noise": {"interleaved": len(specs) > 1, "load": load, "warnings": warnings},
        "models": entries,
    }


def runtime_settings(runner: Runner, config: BenchConfig, img_size: int | tuple[int, int] | None) -> dict[str, Any]:
    """What a figure was measured with: the input shape (C, H, W) and, on OpenVINO, its precision hint and threads."""
    settings: dict[str, Any] = {}
    if not config.end_to_end:
        try:
            settings["input"] = list(input_shape(runner, config.batches[0], img_size)[1:])
        except EcaDeployError:  # a description only: bench itself already ran with this runner
            settings["input"] = None
    else:
        settings["preprocessing"] = end_to_end_model(runner, config).interface.preprocessing.describe()
    return settings | runner.settings()


def add_ratios(entries: list[dict[str, Any]]) -> None:
    """Give each result its speed against the first entry's, timed in the same rounds (`bench_noise.speed_ratio`).

    `ratio_to_first` holds the round-by-round ratios, `ratio` the ratio of the medians (the figure shown), their
    range and the within-noise verdict.
    """
    first = entries[0]["results"] if entries else []
    for entry in entries:
        for result, base in zip(entry["results"], first, strict=True):
            result["ratio_to_first"] = [a / b for a, b in zip(result["rounds"], base["rounds"], strict=True)]
            result["ratio"] = speed_ratio(result["rounds"], base["rounds"]).as_dict()


CSV_FIELDS = ["model", "backend", "precision", "batch", "iterations", "images_per_s", "inferences_per_s",
              "rounds", "images_per_s_min", "images_per_s_max", "min_ms", "mean_ms", "median_ms", "p90_ms", "p95_ms",
              "p99_ms", "max_ms", "h2d_ms", "compute_ms", "d2h_ms"]  # fmt: skip


def write_csv(report: BenchRecord) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for entry in report.models:
        for r in entry.results:
            spread = r.spread
            row = {"model": entry.model, "backend": entry.backend, "precision": entry.precision, "batch": r.batch,
                   "iterations": r.iterations, "images_per_s": r.images_per_s, "inferences_per_s": r.inferences_per_s,
                   "rounds": len(r.rounds) or 1, "images_per_s_min": spread.min if spread else None,
                   "images_per_s_max": spread.max if spread else None}  # fmt: skip
            row |= {f"{k}_ms": v for k, v in r.latency_ms.as_dict().items()}
            row |= r.split_ms or {}
            writer.writerow(row)
    return buf.getvalue()


def write_plot(report: BenchRecord, path: Path) -> None:
    """Throughput and latency (median, p99 whisker) against batch size, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(11, 4.2))
    for entry in report.models:
        batches = [r.batch for r in entry.results]
        label = f"{entry.model} ({entry.precision})"
        ips = [r.images_per_s for r in entry.results]
        spreads = [r.spread or Spread(min=v, max=v, relative=0.0) for r, v in zip(entry.results, ips, strict=True)]
        yerr = [[v - s.min for v, s in zip(ips, spreads, strict=True)],
                [s.max - v for v, s in zip(ips, spreads, strict=True)]]  # fmt: skip
        ax_t.errorbar(batches, ips, yerr=yerr, marker="o", capsize=3, label=label)
        median = [r.latency_ms.median for r in entry.results]
        p99 = [r.latency_ms.p99 - r.latency_ms.median for r in entry.results]
        ax_l.errorbar(batches, median, yerr=[[0] * len(p99), p99], marker="o", capsize=3, label=label)
    all_batches = sorted({r.batch for e in report.models for r in e.results})
    labels = ((ax_t, "images / s (median, bars: min-max of rounds)"), (ax_l, "latency ms (median, whisker to p99)"))
    for ax, ylabel in labels:
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_batches, [str(b) for b in all_batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    ax_t.legend(fontsize=8)
    fig.suptitle(f"eca-deploy bench on {report.environment.device}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)

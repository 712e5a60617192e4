"""`report.md` and `report.html` for a deploy folder: verdicts first, then accuracy, speed and plots."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eca_deploy.deploy.recommend import candidate_label, recommend, several_runtimes
from eca_deploy.deploy.recommend import fastest_by_batch as fastest_by_batch  # re-exported
from eca_deploy.deploy.summary import NOTHING_FUSED, DeploySummary, runtime_label
from eca_deploy.exporters.metadata import random_weights_notice
from eca_deploy.fileio import atomic_write, atomic_write_text
from eca_deploy.pipeline.bench_noise import describe, speed_ratio
from eca_deploy.pipeline.records import (
    BY_BATCH,
    JSON,
    BenchEntry,
    CheckRecord,
    Latency,
    OutputRecord,
    Record,
    nested,
)

PLOTS = ("throughput.png", "latency.png", "accuracy.png")


def _fmt(value: float | None, spec: str = ".3g") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def worst_output(outputs: Mapping[str, OutputRecord]) -> str:
    """The output a one-line summary shows: among the failing ones if any, the one with the lowest cosine (worst
    image), so a detector's row shows its worst head, not its first."""
    failed = [name for name, a in outputs.items() if not a.passed]
    return min(failed or list(outputs), key=lambda name: outputs[name].cosine_min)


@dataclass(frozen=True, kw_only=True)
class SummaryRow(Record):
    """One precision on one runtime, as the report's tables show it (and `deploy --json`'s `rows`). Accuracy
    columns are the worst output's (named in `output`); figures are by batch size."""

    precision: str
    runtime: str | None
    passed: bool
    failures: tuple[str, ...]
    output: str
    top1_agreement: float | None  # the worst over logits outputs
    cosine_min: float
    max_abs_error: float | None
    mean_abs_error: float | None
    notes: tuple[str, ...]
    p50_ms: dict[int, float] = field(metadata=BY_BATCH)
    p99_ms: dict[int, float] = field(metadata=BY_BATCH)
    latency_ms: dict[int, Latency] = field(metadata=nested(Latency, "by_batch"))
    images_per_s: dict[int, float] = field(metadata=BY_BATCH)
    rounds: dict[int, tuple[float, ...]] = field(metadata=BY_BATCH)
    throughput: dict[int, str] = field(metadata=BY_BATCH)  # median (min-max of the rounds)
    per_image: JSON
    outputs: dict[str, OutputRecord] = field(metadata=nested(OutputRecord, "map"))
    input_size: tuple[int, int] | None
    label: str  # 'fp16', or 'fp16 on OpenVINO' where several runtimes ran

    @classmethod
    def of(cls, precision: str, runtime: str | None, check: CheckRecord, entry: BenchEntry, many: bool) -> SummaryRow:
        outputs = check.outputs
        name = worst_output(outputs)
        worst = outputs[name]
        top1 = [a.top1_agreement for a in outputs.values() if a.top1_agreement is not None]
        by_batch = {r.batch: r for r in entry.results}
        return cls(
            precision=precision,
            runtime=runtime,
            passed=check.passed,
            failures=check.failures,
            output=name,
            top1_agreement=min(top1) if top1 else None,
            cosine_min=worst.cosine_min,
            max_abs_error=worst.max_abs_error,
            mean_abs_error=worst.mean_abs_error,
            notes=tuple(check.output_notes()),
            p50_ms={b: r.latency_ms.median for b, r in by_batch.items()},
            p99_ms={b: r.latency_ms.p99 for b, r in by_batch.items()},
            latency_ms={b: r.latency_ms for b, r in by_batch.items()},
            images_per_s={b: r.images_per_s for b, r in by_batch.items()},
            rounds={b: tuple(r.round_rates) for b, r in by_batch.items()},
            throughput={b: describe(r) for b, r in by_batch.items()},
            per_image=check.per_image,
            outputs=outputs,
            input_size=check.input_size,
            label=candidate_label(precision, runtime, many),
        )


def summary_rows(summary: DeploySummary) -> list[SummaryRow]:
    """One row per precision and runtime (ONNX Runtime and OpenVINO both, when both ran), from the check and bench
    records."""
    found = []
    for precision, result in summary.results.items():
        checks = result.checks_by_runtime or {summary.backend: result.check}
        found += [
            (precision, runtime, check, entry)
            for (runtime, check), entry in zip(checks.items(), result.bench.models, strict=False)
        ]
    many = len({runtime for _, runtime, _, _ in found}) > 1
    return [SummaryRow.of(*row, many=many) for row in found]


def output_rows(rows: list[SummaryRow]) -> list[str]:
    """Markdown lines of the per-output accuracy table, for a model with several outputs (else none).

    No max relative error: on values near zero (INT8 rounding a small score) it is huge and says nothing; the mean
    abs error beside the max abs error says how widespread an error is."""
    if not rows or len(rows[0].outputs) < 2:
        return []
    lines = ["", "Every output, per precision (top-1 only for logits):", "",
             "| precision | output | kind | verdict | top-1 agreement | cosine (worst image) | max abs error | "
             "mean abs error |", "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in rows:
        for name, a in r.outputs.items():
            verdict = "PASS" if a.passed else "FAIL: " + "; ".join(a.failures)
            if a.note:
                verdict += " (constant in the reference)"
            lines.append(
                f"| {r.label} | {name} | {a.kind} | {verdict} | {_fmt(a.top1_agreement, '.1%')} | "
                f"{a.cosine_min:.6f} | {_fmt(a.max_abs_error)} | {_fmt(a.mean_abs_error)} |"
            )
    return lines


@dataclass(frozen=True)
class SideBySideRow:
    """One precision at one batch size on every runtime: images/s (min..max) per runtime, the second's ratio to
    the first, and every runtime's verdict."""

    precision: str
    batch: int
    cells: list[str]
    ratio: str
    checks: list[str]


def side_by_side_rows(summary: DeploySummary) -> list[SideBySideRow]:
    """Rows of the runtimes-compared table (several CPU runtimes, interleaved bench): empty otherwise."""
    runtimes = summary.runtimes
    if len(runtimes) < 2:
        return []
    rows = []
    for precision, result in summary.results.items():
        entries = result.bench.models
        checks = result.checks_by_runtime
        verdicts = ["n/a" if r not in checks else "pass" if checks[r].passed else "FAIL" for r in runtimes]
        for i, first in enumerate(entries[0].results):
            cells = []
            for entry in entries:
                r = entry.results[i]
                rates = r.round_rates
                chosen = f" {r.tactic.chosen}" if r.tactic else ""  # OpenVINO: the fastest candidate
                cells.append(f"{r.images_per_s:.1f} ({min(rates):.1f}..{max(rates):.1f}){chosen}")
            ratio = speed_ratio(*(e.results[i].round_rates for e in entries[1::-1])).text()
            rows.append(SideBySideRow(precision, first.batch, cells, ratio, verdicts))
    return rows


def recommendation(rows: list[SummaryRow]) -> str:
    """The fastest passing runtime x precision per batch size, in one line (`recommend` gives it typed)."""
    return recommend(rows).text


FP16_ON_CPU = (
    "Why FP16 is no faster (usually slower) than FP32 here: ONNX Runtime's CPU execution provider has fast float16 "
    "kernels for few operators (on x86, not for convolutions), so it inserts Cast nodes and runs those operators "
    "in float32: the FP16 model pays for the casts and gains nothing. OpenVINO under INFERENCE_PRECISION_HINT f32 "
    "computes it in float32 too. FP16 pays off on a GPU (TensorRT)."
)


def measured_how(summary: DeploySummary) -> list[str]:
    """The setup behind every figure: input, images, tolerances, rounds, fusion, runtimes and their settings."""
    results = summary.results
    first = next(iter(results.values()))
    entries = [e for r in results.values() for e in r.bench.models]
    shape = next((e.runtime_settings.get("input") for e in entries if e.runtime_settings), None)
    config = summary.bench.config
    check = first.check
    images = check.images
    source = summary.images or "the sample photos shipped with eca-deploy (--images DIR for your own)"
    lines = ["", "## How this was measured", ""]
    if shape:
        batches = ", ".join(map(str, config.batches))
        lines.append(
            f"- Input: {'x'.join(map(str, shape))} (C x H x W), at batch sizes {batches}; bench feeds "
            "fixed random inputs."
        )
    skipped = check.skipped_images
    lines.append(
        f"- Accuracy: {len(images)} images from {source}"
        + (f" ({len(skipped)} unreadable, skipped)" if skipped else "")
        + ", against the reference "
        f"({check.reference or 'PyTorch'})."
    )
    for precision, result in results.items():
        tol = result.check.tolerance.as_dict() if result.check.tolerance else {}
        parts = [_tolerance_text(k, v) for k, v in tol.items() if isinstance(v, int | float)]
        lines.append(f"- Tolerance {precision}: {', '.join(parts) or 'n/a'}.")
    if config.batches:  # a bench configuration was recorded
        timing = f"{config.duration_s:g} s" if config.duration_s else f"{config.iterations} iterations"
        lines.append(
            f"- Speed: {config.rounds} interleaved rounds per figure, {timing} per batch size and "
            f"model in all, after {config.warmup_s:g} s of warm-up."
        )
    blocks = summary.fused_blocks
    if blocks == 0:
        lines.append(f"- Fusion: {NOTHING_FUSED}.")
    elif blocks is not None:
        lines.append(f"- Fusion: {blocks} ECA blocks fused into eca_deploy.ECA nodes.")
    versions = summary.environment.versions
    used = [
        k
        for k in ("onnxruntime", "openvino", "tensorrt")
        if versions.get(k) and (k in summary.runtimes or (k == "tensorrt" and summary.backend == "tensorrt"))
    ]
    lines.append(f"- Runtimes: {', '.join(f'{runtime_label(k)} {versions[k]}' for k in used) or 'n/a'}.")
    lines += openvino_lines(summary, entries)
    if summary.backend != "tensorrt" and "fp16" in results:
        ratios = []
        every = summary_rows(summary)  # the ratio on the first runtime (ONNX Runtime), whose FP16 this explains
        rows = {r.precision: r for r in every if r.runtime == every[0].runtime}
        if "fp32" in rows:
            fp16, fp32 = rows["fp16"].rounds, rows["fp32"].rounds
            for b in sorted(set(fp16) & set(fp32)):
                ratios.append(f"{speed_ratio(fp16[b], fp32[b]).text()} at batch {b}")
        lines.append(f"- {FP16_ON_CPU}" + (f" Measured: fp16 / fp32 {'; '.join(ratios)}." if ratios else ""))
    return lines


def _tolerance_text(key: str, value: float) -> str:
    """'top-1 agreement >= 100%', 'cosine (worst image) >= 0.9999', 'max abs error <= 0.001'."""
    if key == "top1_agreement":
        return f"top-1 agreement >= {value:.0%}"
    if key == "cosine_min":
        return f"cosine (worst image) >= {value:g}"
    if key == "max_abs":
        return f"max abs error <= {value:g}"
    return f"{key.replace('_', ' ')} {value:g}"


def tactic_lines(summary: DeploySummary) -> list[str]:
    """OpenVINO's ECA lowering, chosen by measurement like a TensorRT tactic: per precision and batch size."""
    lines = []
    for precision, result in summary.results.items():
        for entry in result.bench.models:
            for r in entry.results:
                tactic = r.tactic
                if tactic:
                    others = ", ".join(f"{n} {c.images_per_s:.1f}" for n, c in tactic.candidates.items())
                    lines.append(
                        f"- {precision}, batch {r.batch}: **{tactic.chosen}**: {tactic.text} "
                        f"(candidates, median images/s: {others})."
                    )
    if not lines:
        return []
    return ["", "## OpenVINO: ECA lowering chosen by measurement", "",
            "OpenVINO timed every candidate in the same interleaved rounds and its figures above are the fastest "
            "one's: `unfused` is model.onnx (OpenVINO's own decomposition), `fused-op` the fused model with the "
            "extension's ECA op, `fused-opset` the fused model converted to OpenVINO's standard ops "
            "(docs/openvino.md). Which wins depends on the network and the CPU.", "", *lines]  # fmt: skip


def openvino_lines(summary: DeploySummary, entries: list[BenchEntry]) -> list[str]:
    """Which INFERENCE_PRECISION_HINT (and threads) every OpenVINO figure used, and OpenVINO's own default."""
    settings = [e.runtime_settings for e in entries if e.backend.startswith("openvino")]
    if not settings:
        return []
    hints = sorted({str(s.get("inference_precision")) for s in settings})
    threads = sorted({str(s.get("threads")) for s in settings if s.get("threads")})
    bf16 = summary.environment.cpu_bf16
    cpu = {
        True: "this CPU has them, so OpenVINO's default here would be bf16",
        False: "this CPU has neither, so its default here is f32",
        None: "unknown for this CPU",
    }[bf16]
    return [f"- OpenVINO: every OpenVINO figure used INFERENCE_PRECISION_HINT {' / '.join(hints)}"
            + (f", {' / '.join(threads)} threads" if threads else "") + "; left to itself OpenVINO runs bf16 on CPUs "
            f"with AVX512_BF16 or AMX (faster, about 3 significant digits; {cpu})."]  # fmt: skip


def markdown(summary: DeploySummary) -> str:
    rows = summary_rows(summary)
    batches = sorted({b for r in rows for b in r.images_per_s})
    env = summary.environment
    device = env.device
    lines = [f"# {summary.model}: deployment report", ""]
    if summary.random_weights:
        notice = random_weights_notice(summary.interface)
        lines += [f"> **Random weights**: {summary.model} has {notice}.", ""]
    for warning in summary.bench.noise.warnings:
        lines += [f"> **Noisy figures**: {warning}.", ""]
    if summary.fused_blocks == 0:
        lines += [f"> **Nothing fused**: {NOTHING_FUSED}.", ""]
    rounds = summary.bench.config.rounds
    lines.append(
        f"Measured on **{device}** ({env.os}, {env.machine}) with **{summary.backend_label}**"
        + (
            f"; images/s are medians of {rounds} rounds interleaved across precisions, with the range "
            "of the rounds in parentheses."
            if rounds
            else "."
        )
    )
    if summary.backend != "tensorrt":
        lines += [
            "",
            f"> These are {summary.backend_label} figures, not TensorRT engine figures: {summary.engine_note}.",
        ]
    size = summary.input_size
    prep = f"; preprocessing: {summary.preprocessing}" if summary.preprocessing else ""
    lines += ["", "## Verdict", ""] + (
        [f"Input size: {size[0]}x{size[1]}{prep} (checks and benchmarks alike).", ""] if size else []
    )
    many, outputs = several_runtimes(rows), len(rows[0].outputs) > 1 if rows else False
    runtime_head, runtime_rule = ("runtime | ", "--- | ") if many else ("", "")
    output_head, output_rule = (" worst output |", " --- |") if outputs else ("", "")
    lines += [
        f"| precision | {runtime_head}verdict | top-1 agreement | cosine (worst image) | max abs error |"
        f"{output_head} " + " | ".join(f"images/s @ {b}" for b in batches) + " |",
        f"| --- | {runtime_rule}--- | ---: | ---: | ---: |{output_rule} " + " | ".join("---:" for _ in batches) + " |",
    ]
    for r in rows:
        verdict = "PASS" if r.passed else "FAIL: " + "; ".join(r.failures)
        runtime = f"{_runtime(r)} | " if many else ""
        output = f" {r.output} |" if outputs else ""
        lines.append(
            f"| {r.precision} | {runtime}{verdict} | {_fmt(r.top1_agreement, '.1%')} | {r.cosine_min:.6f} | "
            f"{_fmt(r.max_abs_error)} |{output} " + " | ".join(r.throughput.get(b, "n/a") for b in batches) + " |"
        )
    if outputs:
        lines += [
            "",
            "Accuracy columns show each row's worst output (a failing one first, else the lowest cosine); "
            "every output is in the table below.",
        ]
    for note in dict.fromkeys(n for r in rows for n in r.notes):
        lines += ["", f"> **Constant output**: {note}."]
    lines += output_rows(rows)
    lines += [
        "",
        recommendation(rows),
        "",
        "## Latency (ms)",
        "",
        f"| precision | {runtime_head}" + " | ".join(f"p50 @ {b} | p99 @ {b}" for b in batches) + " |",
        f"| --- | {runtime_rule}" + " | ".join("---: | ---:" for _ in batches) + " |",
    ]
    for r in rows:
        cells = " | ".join(f"{r.p50_ms[b]:.3f} | {r.p99_ms[b]:.3f}" for b in batches)
        runtime = f"{_runtime(r)} | " if many else ""
        lines.append(f"| {r.precision} | {runtime}{cells} |")
    side = side_by_side_rows(summary)
    if side:
        names = summary.runtimes
        lines += ["", f"## {' and '.join(names)} side by side", "",
                  "Images/s, median of interleaved rounds (min..max), and the per-round ratio; every runtime's "
                  "verdict is in the table above.", "",
                  f"| precision | batch | {' | '.join(names)} | {names[1]} / {names[0]} | "
                  + " | ".join(f"check {n}" for n in names) + " |",
                  "| --- | ---: | " + " | ".join("---:" for _ in names) + " | ---: | "
                  + " | ".join("---" for _ in names) + " |"]  # fmt: skip
        for r in side:
            lines.append(f"| {r.precision} | {r.batch} | {' | '.join(r.cells)} | {r.ratio} | {' | '.join(r.checks)} |")
    lines += tactic_lines(summary)
    lines += measured_how(summary)
    lines += ["", "## Plots", ""] + [f"![{name[:-4]}]({name})" for name in PLOTS]
    versions = ", ".join(f"{k} {v}" for k, v in env.versions.items() if v)
    lines += [
        "",
        "## Environment",
        "",
        f"- CPU: {env.cpu} ({env.cpu_count} cores)",
        f"- GPU: {device if env.gpu else 'none'}",
        f"- Versions: {versions}",
        "",
        "Every number above comes from the check and bench JSON files beside this report; "
        "`manifest.json` lists the command line of every stage.",
    ]
    return "\n".join(lines) + "\n"


def _runtime(row: SummaryRow) -> str:
    return runtime_label(row.runtime or "")


def html_page(markdown_text: str, folder: Path) -> str:
    """A self-contained HTML page: the report's text, its tables, and the plots inlined as data URIs."""
    body: list[str] = []
    table: list[list[str]] = []

    def flush_table() -> None:
        if table:
            head, *rest = table
            body.append(
                "<table><tr>"
                + "".join(f"<th>{c}</th>" for c in head)
                + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rest)
                + "</table>"
            )
            table.clear()

    for line in markdown_text.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()).replace("**", "") for c in line.strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                table.append(cells)
            continue
        flush_table()
        text = html.escape(line).replace("**", "")
        if line.startswith("# "):
            body.append(f"<h1>{text[2:]}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{text[3:]}</h2>")
        elif line.startswith("!["):
            name = line[line.index("(") + 1 : -1]
            data = base64.b64encode((folder / name).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
        elif line.startswith("> "):
            body.append(f"<blockquote>{text[5:]}</blockquote>")
        elif line.startswith("- "):
            body.append(f"<li>{text[2:]}</li>")
        elif line:
            body.append(f"<p>{text}</p>")
    flush_table()
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}img{max-width:100%}"
        "blockquote{background:#fff4d6;padding:6px 12px;margin:0}"
    )
    head = f"<head><meta charset='utf-8'><title>eca-deploy report</title><style>{style}</style></head>"
    return f"<!doctype html><html>{head}<body>{''.join(body)}</body></html>\n"


def plots(summary: DeploySummary, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary_rows(summary)
    batches = sorted({b for r in rows for b in r.images_per_s})

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        atomic_write(folder / name, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:  # every runtime x precision; a failing one dashed (never recommended)
        ax.plot(
            batches,
            [r.images_per_s.get(b, math.nan) for b in batches],
            marker="o",
            linestyle="-" if r.passed else "--",
            label=r.label + ("" if r.passed else " (FAIL)"),
        )
    ax.set(xscale="log", xlabel="batch size", ylabel="images / s", title="Throughput vs batch")
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.grid(True, alpha=0.3)
    ax.legend()
    save(fig, "throughput.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / max(1, len(rows))
    for i, row in enumerate(rows):
        for j, b in enumerate(batches):
            lat = row.latency_ms.get(b)
            if lat is None:
                continue
            x = j + (i - (len(rows) - 1) / 2) * width
            ax.vlines(x, lat.min, lat.max, color=f"C{i}", alpha=0.4)
            ax.vlines(x, lat.median, lat.p99, color=f"C{i}", linewidth=6, label=row.label if j == 0 else None)
            ax.plot(x, lat.median, "o", color="black", markersize=3)
    ax.set_xticks(range(len(batches)), [str(b) for b in batches])
    ax.set(xlabel="batch size", ylabel="latency ms (log scale)", title="Latency: min-max, thick p50-p99", yscale="log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    save(fig, "latency.png")

    accuracy_plot(rows, save)


def accuracy_plot(rows: list[SummaryRow], save: Any) -> None:
    """Per image, 1 - cosine and max abs error against the reference on log scales: 0.99985 and 1.0 look different.

    Per image the worst over the outputs (check's `per_image`), so the plot and the verdict table's worst output
    tell the same story."""
    import matplotlib.pyplot as plt

    floor = 1e-12  # exact agreement (0) drawn at the floor of the log axis
    fig, (ax_c, ax_e) = plt.subplots(1, 2, figsize=(10, 4))
    for i, r in enumerate(rows):
        per = r.per_image or {}
        cos, err = per.get("one_minus_cosine") or [], per.get("max_abs_error") or []
        xs = range(1, len(cos) + 1)
        ax_c.plot(xs, [max(v, floor) for v in cos], "o-", color=f"C{i}", label=r.label, markersize=4)
        ax_e.plot(xs, [max(v, floor) for v in err], "o-", color=f"C{i}", label=r.label, markersize=4)
    what = "Worst output" if rows and len(rows[0].outputs) > 1 else "Output"
    ax_c.set(yscale="log", xlabel="image", ylabel="1 - cosine similarity", title=f"{what} vs reference: 1 - cosine")
    ax_e.set(yscale="log", xlabel="image", ylabel="max abs error", title=f"{what} vs reference: max abs error")
    for ax in (ax_c, ax_e):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    save(fig, "accuracy.png")


def write_report(summary: DeploySummary, folder: Path) -> list[Path]:
    plots(summary, folder)
    text = markdown(summary)
    atomic_write_text(folder / "report.md", text)
    atomic_write_text(folder / "report.html", html_page(text, folder))
    return [folder / "report.md", folder / "report.html", *(folder / p for p in PLOTS)]

"""What to ship: per batch size, the fastest runtime x precision whose check passed, and whether it beats the rest
beyond the noise of the benchmark's rounds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from eca_deploy.backends.handle import RUNTIME_LABELS
from eca_deploy.pipeline.bench_noise import Fastest, fastest


def runtime_label(runtime: str) -> str:
    """'ONNX Runtime', 'OpenVINO', 'TensorRT'."""
    return RUNTIME_LABELS.get(runtime, runtime)


def candidate_label(row: dict[str, Any], several_runtimes: bool) -> str:
    """'int8 on OpenVINO' where several runtimes were measured, else just the precision ('int8')."""
    runtime = row.get("runtime")
    if not several_runtimes or not runtime:
        return str(row["precision"])
    return f"{row['precision']} on {runtime_label(runtime)}"


def several_runtimes(rows: Sequence[dict[str, Any]]) -> bool:
    return len({r.get("runtime") for r in rows}) > 1


@dataclass(frozen=True)
class Pick:
    """The fastest passing candidate at one batch size (by the median of its rounds)."""

    batch: int
    label: str  # 'int8 on OpenVINO', or the precision alone when one runtime was measured
    precision: str
    runtime: str | None  # 'onnxruntime', 'openvino', 'tensorrt' (None: not recorded)
    images_per_s: float  # median of its rounds
    beyond_noise: bool  # its slowest round beats every rival's fastest: measurably the fastest
    runner_up: str | None  # the second fastest passing candidate, None when it is the only one
    margin: float | None  # its median over the runner-up's
    tied: tuple[str, ...]  # passing rivals whose rounds overlap its own
    text: str  # e.g. 'int8 on OpenVINO 95.1 images/s, 4.70x int8 on ONNX Runtime (beyond the spread of the rounds)'

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Recommendation:
    """Per batch size, what to ship among the candidates that passed their check; `text` says it in one line."""

    picks: tuple[Pick, ...]
    passing: tuple[str, ...]  # labels of every candidate within its tolerance
    failing: tuple[str, ...]  # labels of every candidate outside it: never recommended, whatever its speed
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "per_batch": [p.as_dict() for p in self.picks], "passing": list(self.passing),
                "failing": list(self.failing)}  # fmt: skip


def fastest_by_batch(rows: Sequence[dict[str, Any]]) -> list[tuple[int, Fastest]]:
    """Per batch size, the fastest passing candidate by median images/s, and whether its rounds beat every rival's.

    A row is one precision on one runtime (`precision`, `runtime`, `passed`, `rounds` per batch size)."""
    many = several_runtimes(rows)
    passing = [r for r in rows if r["passed"]]
    batches = sorted({b for r in passing for b in r["rounds"]})
    return [(b, fastest({candidate_label(r, many): r["rounds"][b] for r in passing if b in r["rounds"]}))
            for b in batches]  # fmt: skip


def recommend(rows: Sequence[dict[str, Any]]) -> Recommendation:
    """The fastest passing runtime x precision at each batch size, named in bold only where it beats every other
    passing candidate beyond the noise ("beyond the noise": its slowest round is faster than each rival's fastest)."""
    many = several_runtimes(rows)
    by_label = {candidate_label(r, many): r for r in rows}
    passing = tuple(label for label, r in by_label.items() if r["passed"])
    failing = tuple(label for label, r in by_label.items() if not r["passed"])
    per_batch = fastest_by_batch(rows)
    picks = tuple(
        Pick(batch=b, label=f.name, precision=by_label[f.name]["precision"], runtime=by_label[f.name].get("runtime"),
             images_per_s=f.medians[f.name], beyond_noise=f.beyond_noise, runner_up=f.runner_up,
             margin=None if math.isnan(f.margin) else f.margin, tied=f.tied, text=f.text())
        for b, f in per_batch
    )  # fmt: skip
    return Recommendation(picks, passing, failing, _text(picks, passing, rows, many))


def _text(picks: Sequence[Pick], passing: Sequence[str], rows: Sequence[dict[str, Any]], many: bool) -> str:
    what = "runtime and precision" if many else "precision"
    if not passing:
        return f"No {what} passes its tolerance: ship none of these before finding out why (check --per-layer)."
    if len(passing) == 1:
        figures = "; ".join(f"batch {p.batch}: {p.text}" for p in picks)
        return f"Only **{passing[0]}** passes its tolerance: {figures}."
    parts = [f"batch {p.batch}: **{p.label}** ({p.text})" if p.beyond_noise else f"batch {p.batch}: within noise "
             f"({p.text})" for p in picks]  # fmt: skip
    text = f"Fastest {what} within tolerance, per batch size: " + "; ".join(parts) + "."
    if any(not p.beyond_noise for p in picks):
        one_round = any(len(r["rounds"][b]) < 2 for r in rows if r["passed"] for b in r["rounds"])
        why = "one round measures no spread" if one_round else "their rounds overlap"
        text += (f" Where it says within noise ({why}), no {what} is measurably faster: choose on accuracy "
                 "there, or rerun with a longer --duration or on a quieter machine.")  # fmt: skip
    return text

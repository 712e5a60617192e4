"""What to ship: per batch size, the fastest runtime x precision whose check passed, and whether it beats the rest
beyond the noise of the benchmark's rounds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from eca_deploy.deploy.summary import runtime_label
from eca_deploy.pipeline.bench_noise import Fastest, fastest


class Candidate(Protocol):
    """One precision on one runtime, as the report's rows (deploy.report.SummaryRow) describe it."""

    @property
    def precision(self) -> str: ...
    @property
    def runtime(self) -> str | None: ...
    @property
    def passed(self) -> bool: ...
    @property
    def rounds(self) -> Mapping[int, Sequence[float]]: ...  # images/s of every round, by batch size


def candidate_label(precision: str, runtime: str | None, several_runtimes: bool) -> str:
    """'int8 on OpenVINO' where several runtimes were measured, else just the precision ('int8')."""
    if not several_runtimes or not runtime:
        return precision
    return f"{precision} on {runtime_label(runtime)}"


def several_runtimes(rows: Sequence[Candidate]) -> bool:
    return len({r.runtime for r in rows}) > 1


def _label(row: Candidate, many: bool) -> str:
    return candidate_label(row.precision, row.runtime, many)


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


def fastest_by_batch(rows: Sequence[Candidate]) -> list[tuple[int, Fastest]]:
    """Per batch size, the fastest passing candidate by median images/s, and whether its rounds beat every rival's.

    A row is one precision on one runtime (`precision`, `runtime`, `passed`, `rounds` per batch size)."""
    many = several_runtimes(rows)
    passing = [r for r in rows if r.passed]
    batches = sorted({b for r in passing for b in r.rounds})
    return [(b, fastest({_label(r, many): list(r.rounds[b]) for r in passing if b in r.rounds}))
            for b in batches]  # fmt: skip


def recommend(rows: Sequence[Candidate]) -> Recommendation:
    """The fastest passing runtime x precision at each batch size, named in bold only where it beats every other
    passing candidate beyond the noise ("beyond the noise": its slowest round is faster than each rival's fastest)."""
    many = several_runtimes(rows)
    by_label = {_label(r, many): r for r in rows}
    passing = tuple(label for label, r in by_label.items() if r.passed)
    failing = tuple(label for label, r in by_label.items() if not r.passed)
    per_batch = fastest_by_batch(rows)
    picks = tuple(
        Pick(batch=b, label=f.name, precision=by_label[f.name].precision, runtime=by_label[f.name].runtime,
             images_per_s=f.medians[f.name], beyond_noise=f.beyond_noise, runner_up=f.runner_up,
             margin=None if math.isnan(f.margin) else f.margin, tied=f.tied, text=f.text())
        for b, f in per_batch
    )  # fmt: skip
    return Recommendation(picks, passing, failing, _text(picks, passing, rows, many))


def _text(picks: Sequence[Pick], passing: Sequence[str], rows: Sequence[Candidate], many: bool) -> str:
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
        one_round = any(len(rates) < 2 for r in rows if r.passed for rates in r.rounds.values())
        why = "one round measures no spread" if one_round else "their rounds overlap"
        text += (f" Where it says within noise ({why}), no {what} is measurably faster: choose on accuracy "
                 "there, or rerun with a longer --duration or on a quieter machine.")  # fmt: skip
    return text

"""How far a benchmark's figures can be trusted: the machine's load while measuring and the rounds' spread.

- Load: the CPU time other processes used while we measured (from /proc/stat, less our own CPU time),
  as a fraction of all CPUs; elsewhere the 1-minute load average against the CPU count.
- Spread: every figure is the median of several rounds; (max - min) / median of the rounds says how much
  it moved. A difference between two figures counts only when their rounds do not overlap: the slower
  one's fastest round is slower than the faster one's slowest round. With 5 rounds, two runs of the same
  model are called different by chance less than 1% of the time (2 of the 252 orderings).
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eca_deploy.pipeline.records import BatchRecord

BUSY_OTHER_CPU = 0.25  # other processes used more than this fraction of all CPUs: the machine is busy
NOISY_SPREAD = 0.10  # rounds of one figure differ by more than this fraction of its median: noisy


@dataclass(frozen=True)
class CpuSample:
    busy_s: float | None  # CPU seconds all processes spent busy since boot (/proc/stat), None if unknown
    total_s: float | None  # CPU seconds of all CPUs since boot
    own_s: float  # CPU seconds of this process


def cpu_sample() -> CpuSample:
    own = os.times()
    own_s = own.user + own.system
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError, IndexError):
        return CpuSample(None, None, own_s)
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
    return CpuSample(busy / hz, (busy + ticks[3] + ticks[4]) / hz, own_s)


def machine_load(start: CpuSample, end: CpuSample, cpu_count: int | None = None) -> dict[str, Any]:
    """What else ran while measuring, and whether that makes the machine busy."""
    cpus = cpu_count or os.cpu_count() or 1
    try:
        load_average: float | None = os.getloadavg()[0]
    except (AttributeError, OSError):
        load_average = None
    other = None
    if start.busy_s is not None and end.busy_s is not None and end.total_s and start.total_s is not None:
        total = end.total_s - start.total_s
        if total > 0:
            other = max(0.0, (end.busy_s - start.busy_s) - (end.own_s - start.own_s)) / total
    busy = other > BUSY_OTHER_CPU if other is not None else load_average is not None and load_average > cpus
    return {"cpu_count": cpus, "other_cpu_fraction": other, "load_average": load_average, "busy": busy}


def busy_warning(load: dict[str, Any]) -> str | None:
    if not load.get("busy"):
        return None
    cpus = load["cpu_count"]
    what = (
        f"other processes used {load['other_cpu_fraction']:.0%} of the {cpus} CPUs"
        if load.get("other_cpu_fraction") is not None
        else f"load average {load['load_average']:.2f} on {cpus} CPUs"
    )
    return (
        f"the machine was busy while measuring ({what}): figures are lower and noisier than on a quiet "
        "machine; rerun when it is idle before trusting them"
    )


def spread_warning(entries: Sequence[dict[str, Any]]) -> str | None:
    """One line naming the noisiest figure, when its rounds spread more than NOISY_SPREAD."""
    worst = None
    for entry in entries:
        for r in entry["results"]:
            spread = r.get("spread")
            if spread and (worst is None or spread["relative"] > worst[0]):
                worst = (spread["relative"], entry["model"], r["batch"])
    if worst is None or worst[0] <= NOISY_SPREAD:
        return None
    return (
        f"throughput moved by up to {worst[0]:.0%} between rounds ({worst[1]}, batch {worst[2]}): differences "
        "smaller than the spread are noise; use a longer --duration or a quieter machine"
    )


def compare_rounds(a: Sequence[float], b: Sequence[float]) -> int:
    """+1 when `a` is measurably faster than `b`, -1 when slower, 0 when within noise (or one round only)."""
    if len(a) < 2 or len(b) < 2:
        return 0
    if min(a) > max(b):
        return 1
    if min(b) > max(a):
        return -1
    return 0


VERDICTS = ("faster", "within noise", "slower")  # compare_rounds' +1, 0, -1 in words


def verdict(a: Sequence[float], b: Sequence[float]) -> str:
    """'faster', 'within noise' or 'slower': how `a`'s rounds (images/s) compare with `b`'s (see compare_rounds)."""
    return {1: VERDICTS[0], 0: VERDICTS[1], -1: VERDICTS[2]}[compare_rounds(a, b)]


def median_rate(rounds: Sequence[float]) -> float:
    """The one figure of a set of rounds (images/s of each): their median. `bench` reports this as images_per_s."""
    return float(statistics.median(rounds)) if rounds else math.nan


@dataclass(frozen=True)
class Ratio:
    """How `a` compares with `base`: the ratio of their medians, the range of the round-by-round ratios, a verdict.

    The ratio of the medians always lies within the per-round range (each round of `a` is at least `low` times
    the same round of `base`, so its median is too), so ratio and medians never contradict each other.
    """

    value: float  # median_rate(a) / median_rate(base)
    low: float  # smallest a[i] / base[i] over rounds run side by side
    high: float
    verdict: int  # compare_rounds(a, base)

    def text(self) -> str:
        """'1.09x (1.02..1.15)', with ', within noise' when the rounds overlap (or there is one round)."""
        span = f" ({self.low:.2f}..{self.high:.2f})" if self.low != self.high else ""
        return f"{self.value:.2f}x{span}" + (", within noise" if self.verdict == 0 else "")

    def as_dict(self) -> dict[str, float | int]:
        return {"ratio": self.value, "min": self.low, "max": self.high, "verdict": self.verdict}


def speed_ratio(a: Sequence[float], base: Sequence[float]) -> Ratio:
    """The throughput of rounds `a` against rounds `base` (images/s, timed in the same interleaved rounds)."""
    per_round = [x / y for x, y in zip(a, base, strict=True)] or [math.nan]
    return Ratio(median_rate(a) / median_rate(base), min(per_round), max(per_round), compare_rounds(a, base))


@dataclass(frozen=True)
class Fastest:
    """The fastest of several candidates by median throughput, and whether its rounds beat every rival's."""

    name: str
    medians: dict[str, float]  # every candidate's median images/s
    runner_up: str | None  # the second-fastest candidate, None when there is one candidate
    margin: float  # the winner's median over the runner-up's (nan without a rival)
    beyond_noise: bool  # compare_rounds(winner, rival) == 1 against every rival
    tied: tuple[str, ...]  # rivals whose rounds overlap the winner's (all of them with one round only)

    def text(self, unit: str = "images/s") -> str:
        """'opset 123.4 images/s, 1.08x unfused (beyond the spread of the rounds)' or '... within noise of ...'."""
        best = f"{self.name} {self.medians[self.name]:.1f} {unit}"
        if self.runner_up is None:
            return best
        if self.beyond_noise:
            return f"{best}, {self.margin:.2f}x {self.runner_up} (beyond the spread of the rounds)"
        return f"{best}, {self.margin:.2f}x {self.runner_up}, within noise of {', '.join(self.tied)} (rounds overlap)"


def fastest(candidates: Mapping[str, Sequence[float]]) -> Fastest:
    """The candidate with the highest median of its rounds; `beyond_noise` only when no rival's rounds overlap."""
    if not candidates:
        raise ValueError("fastest() needs at least one candidate")
    medians = {name: median_rate(rounds) for name, rounds in candidates.items()}
    order = sorted(medians, key=lambda n: -medians[n] if not math.isnan(medians[n]) else math.inf)
    best, rivals = order[0], order[1:]
    tied = tuple(r for r in rivals if compare_rounds(candidates[best], candidates[r]) != 1)
    runner_up = rivals[0] if rivals else None
    margin = medians[best] / medians[runner_up] if runner_up else math.nan
    return Fastest(best, medians, runner_up, margin, bool(rivals) and not tied, tied)


def describe(result: BatchRecord) -> str:
    """'123.4 (118.0-130.2)': the median images/s and the range of the rounds."""
    spread = result.spread
    text = f"{result.images_per_s:.1f}"
    return text + (f" ({spread.min:.1f}-{spread.max:.1f})" if spread else "")

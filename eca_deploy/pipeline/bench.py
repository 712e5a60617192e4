"""`bench`: throughput and latency per batch size, trtexec-style, on any backend.

Models compared in one run are timed in interleaved rounds (A B, B A, A B, ...) so that clock, thermal and
load drift hit all of them alike; each figure carries the spread of its rounds (see `bench_noise`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from eca_deploy.backends.base import Runner, StepOptions
from eca_deploy.data.images import Preprocessing, read_rgb, sample_image_paths
from eca_deploy.errors import SettingError
from eca_deploy.interface import outputs_from_tensors, resolve_size, static_hw
from eca_deploy.pipeline.bench_noise import median_rate
from eca_deploy.runtime import Classifier, Model

PERCENTILES = (50, 90, 95, 99)
DEFAULT_ROUNDS = 5  # measuring rounds per figure (bench --rounds, deploy --rounds)
Clock = Callable[[], float]
Tick = Callable[[float], None]


@dataclass(frozen=True)
class BenchConfig:
    batches: tuple[int, ...] = (1, 8, 32)
    warmup_s: float = 2.0
    duration_s: float | None = 10.0  # measure for this long in all (split over the rounds) ...
    iterations: int | None = None  # ... or exactly this many iterations in all
    step: StepOptions = field(default_factory=StepOptions)
    end_to_end: bool = False  # time classify() on real photos: preprocess + inference + postprocess
    rounds: int = DEFAULT_ROUNDS  # measuring rounds per model and batch size, interleaved across models
    # End to end: --mean/--std/--interpolation/--resize-mode over each model's own preprocessing, and where to say
    # that a model without metadata is preprocessed as ImageNet's.
    adjust: Callable[[Preprocessing], Preprocessing] | None = field(default=None, compare=False)
    warn: Callable[[str], None] = field(default=lambda _m: None, compare=False)

    def validate(self) -> None:
        if not self.batches or any(b < 1 for b in self.batches):
            raise SettingError(f"{{batches}} needs positive integers such as 1,8,32, got {list(self.batches)}")
        if self.iterations is not None and self.iterations < 1:
            raise SettingError(f"{{iterations}} must be at least 1, got {self.iterations}")
        if self.iterations is None and (self.duration_s is None or self.duration_s <= 0):
            raise SettingError("{duration} must be positive (or give {iterations})")
        if self.warmup_s < 0:
            raise SettingError("{warmup} must not be negative")
        if self.rounds < 1:
            raise SettingError(f"{{rounds}} must be at least 1, got {self.rounds}")

    def round_budgets(self) -> list[tuple[float | None, int | None]]:
        """(seconds, iterations) of each round: the total split evenly, every round at least one iteration."""
        if self.iterations is not None:
            n = min(self.rounds, self.iterations)
            base, extra = divmod(self.iterations, n)
            return [(None, base + (1 if i < extra else 0)) for i in range(n)]
        return [((self.duration_s or 0.0) / self.rounds, None)] * self.rounds


@dataclass
class BatchResult:
    batch: int
    iterations: int
    total_s: float
    images_per_s: float  # median of the rounds' throughput
    inferences_per_s: float
    latency_ms: dict[str, float]  # min, mean, median, p90, p95, p99, max over every timed iteration
    split_ms: dict[str, float] | None = None  # mean h2d / compute / d2h (TensorRT)
    stages_ms: dict[str, float] | None = None  # mean preprocess / inference / postprocess (end to end)
    rounds: list[float] = field(default_factory=list)  # images/s of each round, in time order
    spread: dict[str, float] | None = None  # min, max and (max - min) / median of `rounds`; None for one round

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Round:
    """One timed stretch of a step: seconds per call, and what the calls returned (split or stage times)."""

    samples: list[float]
    total_s: float
    extras: list[Any]


def latency_stats(ms: np.ndarray) -> dict[str, float]:
    stats = {"min": float(ms.min()), "mean": float(ms.mean()), "median": float(np.median(ms))}
    stats |= {f"p{p}": float(np.percentile(ms, p)) for p in PERCENTILES if p != 50}
    stats["max"] = float(ms.max())
    return stats


def warm_up(step: Callable[[], Any], seconds: float, clock: Clock = time.perf_counter) -> None:
    """At least one untimed run (first-run allocations never count), then more for `seconds`."""
    end = clock() + seconds
    step()
    while clock() < end:
        step()


def measure_round(
    step: Callable[[], Any],
    seconds: float | None,
    iterations: int | None,
    tick: Tick | None = None,
    clock: Clock = time.perf_counter,
) -> Round:
    """Time `step` for `iterations` calls or `seconds`; `tick(fraction_done)` reports progress."""
    samples: list[float] = []
    extras: list[Any] = []
    start = clock()
    deadline = start + (seconds or 0.0)
    while True:
        t0 = clock()
        extra = step()
        samples.append(clock() - t0)
        if extra is not None:
            extras.append(extra)
        n = len(samples)
        if iterations is not None:
            if tick and n % max(1, iterations // 50) == 0:
                tick(n / iterations)
            if n >= iterations:
                break
        else:
            now = clock()
            if tick and seconds and n % 10 == 0:
                tick(min(1.0, (now - start) / seconds))
            if now >= deadline:
                break
    return Round(samples, clock() - start, extras)


def summarize(rounds: Sequence[Round], batch: int, per_step: int = 1) -> BatchResult:
    """One figure from its rounds: median throughput of the rounds, latency over every timed call."""
    samples = [s for r in rounds for s in r.samples]
    total = sum(r.total_s for r in rounds)
    per_round = [batch * per_step * len(r.samples) / r.total_s for r in rounds if r.total_s > 0]
    images_per_s = median_rate(per_round)
    spread = None
    if len(per_round) > 1:
        lo, hi = min(per_round), max(per_round)
        spread = {"min": lo, "max": hi, "relative": (hi - lo) / images_per_s}
    extras = [e for r in rounds for e in r.extras]
    split = stages = None
    if extras and hasattr(extras[0], "h2d_ms"):
        split = {k: float(np.mean([getattr(e, k) for e in extras])) for k in ("h2d_ms", "compute_ms", "d2h_ms")}
    elif extras and hasattr(extras[0], "preprocess_ms"):
        keys = ("preprocess_ms", "inference_ms", "postprocess_ms")
        stages = {k: float(np.mean([getattr(e, k) for e in extras])) for k in keys}
    return BatchResult(
        batch=batch,
        iterations=len(samples),
        total_s=total,
        images_per_s=images_per_s,
        inferences_per_s=images_per_s / batch,
        latency_ms=latency_stats(np.asarray(samples) * 1e3),
        split_ms=split,
        stages_ms=stages,
        rounds=per_round,
        spread=spread,
    )


def bench_batch(
    step: Callable[[], Any],
    batch: int,
    config: BenchConfig,
    tick: Tick | None = None,
    clock: Clock = time.perf_counter,
) -> BatchResult:
    """Warm up, then time `step` in one round of the whole duration (or iterations)."""
    warm_up(step, config.warmup_s, clock)
    timed = measure_round(
        step, config.duration_s if config.iterations is None else None, config.iterations, tick, clock
    )
    return summarize([timed], batch, getattr(step, "inferences", 1))


def bench_interleaved(
    steps: Sequence[Callable[[], Any]],
    batch: int,
    config: BenchConfig,
    ticks: Sequence[Tick | None] | None = None,
    clock: Clock = time.perf_counter,
) -> list[BatchResult]:
    """Time several steps (one per model) at one batch size in rounds, rotating their order each round.

    Round r runs the steps in order r, r+1, ... (mod n), each after one untimed call, so no model always
    runs first or right after the same neighbour.
    """
    for step in steps:
        warm_up(step, config.warmup_s, clock)
    budgets = config.round_budgets()
    rounds: list[list[Round]] = [[] for _ in steps]
    n = len(steps)
    for r, (seconds, iterations) in enumerate(budgets):
        for i in [(r + j) % n for j in range(n)]:
            tick = ticks[i] if ticks else None
            steps[i]()  # untimed: the caches now hold this model, not the previous one
            part = (lambda f, t=tick, r=r: t((r + f) / len(budgets))) if tick else None
            rounds[i].append(measure_round(steps[i], seconds, iterations, part, clock))
    return [summarize(rounds[i], batch, getattr(steps[i], "inferences", 1)) for i in range(n)]


def input_shape(runner: Runner, batch: int, img_size: int | tuple[int, int] | None) -> tuple[int, ...]:
    """[batch, C, H, W] of the runner's image input: its static H/W, else `img_size` (--img-size)."""
    info = runner.inputs[0]
    n, c, _, _ = info.shape
    if isinstance(n, int) and n != batch:
        raise SettingError(f"{runner.name} model has a static batch of {n}: use {{batches}} {n}")
    requested = (img_size, img_size) if isinstance(img_size, int) else img_size
    static = static_hw(info.shape)
    if static is None and requested is None:
        raise SettingError("the model's input size is dynamic: pass {img_size}")
    size_h, size_w = resolve_size(static, None, requested, f"the {runner.name} model")
    return (batch, c if isinstance(c, int) else 3, size_h, size_w)


def make_steps(
    runner: Runner, config: BenchConfig, img_size: int | tuple[int, int] | None
) -> dict[int, Callable[[], Any]]:
    """The timed step of `runner` per batch size: one inference on fixed random inputs, or classify() on photos."""
    if config.end_to_end:
        return end_to_end_steps(runner, config)
    rng = np.random.default_rng(0)
    dtype = np.float16 if "float16" in runner.inputs[0].dtype else np.float32
    steps = {}
    for batch in config.batches:
        shape = input_shape(runner, batch, img_size)
        feed = {runner.inputs[0].name: rng.standard_normal(shape).astype(dtype)}
        steps[batch] = runner.make_step(feed, config.step)
    return steps


def end_to_end_model(runner: Runner, config: BenchConfig, warn: Callable[[str], None] = lambda _m: None) -> Any:
    """What `run` runs on `runner`: a `Classifier` for a model with logits, else a `Model` (raw outputs), with the
    model's own preprocessing (its metadata, ONNX Runtime and OpenVINO alike) and `config.adjust`."""
    metadata = runner.metadata
    outputs = outputs_from_tensors(runner.outputs, tuple(getattr(metadata, "outputs", ()) or ()))
    kind = Classifier if any(o.kind == "logits" for o in outputs) else Model
    return kind(runner, metadata, channel_order="RGB", adjust=config.adjust, warn=warn)


def end_to_end_steps(runner: Runner, config: BenchConfig) -> dict[int, Callable[[], Any]]:
    """`Classifier.classify` (or `Model.run`) on batches of the sample photographs (uint8 frames of their own sizes)."""
    model = end_to_end_model(runner, config, config.warn)
    timed = getattr(model, "classify_timed", model.run_timed)
    photos = [read_rgb(p) for p in sample_image_paths()]
    steps = {}
    for batch in config.batches:
        frames = [photos[i % len(photos)] for i in range(batch)]
        steps[batch] = lambda frames=frames: timed(frames)[1]
    return steps


def bench_runners(
    runners: Sequence[Runner],
    config: BenchConfig,
    img_size: int | tuple[int, int] | None = None,
    on_batch: Sequence[Callable[[int], Tick] | None] | None = None,
    clock: Clock = time.perf_counter,
) -> list[list[BatchResult]]:
    """Benchmark every batch size of `config` on each runner, the runners interleaved; results per runner."""
    config.validate()
    steps = [make_steps(r, config, img_size) for r in runners]
    results: list[list[BatchResult]] = [[] for _ in runners]
    for batch in config.batches:
        ticks = [cb(batch) if cb else None for cb in on_batch] if on_batch else None
        for i, result in enumerate(bench_interleaved([s[batch] for s in steps], batch, config, ticks, clock)):
            results[i].append(result)
    return results


def bench_runner(
    runner: Runner,
    config: BenchConfig,
    img_size: int | tuple[int, int] | None = None,
    on_batch: Callable[[int], Tick] | None = None,
) -> list[BatchResult]:
    """Benchmark every batch size of `config` on one runner (inputs: fixed random normal images)."""
    return bench_runners([runner], config, img_size, [on_batch] if on_batch else None)[0]

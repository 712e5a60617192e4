"""`bench`: throughput and latency per batch size, trtexec-style, on any backend."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from eca_deploy.backends.base import Runner, StepOptions, StepTimes
from eca_deploy.errors import EcaDeployError

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class BenchConfig:
    batches: tuple[int, ...] = (1, 8, 32)
    warmup_s: float = 2.0
    duration_s: float | None = 10.0  # measure for this long ...
    iterations: int | None = None  # ... or exactly this many iterations
    step: StepOptions = field(default_factory=StepOptions)
    end_to_end: bool = False  # time classify() on real photos: preprocess + inference + postprocess

    def validate(self) -> None:
        if not self.batches or any(b < 1 for b in self.batches):
            raise EcaDeployError(f"--batch needs positive integers such as 1,8,32, got {list(self.batches)}")
        if self.iterations is not None and self.iterations < 1:
            raise EcaDeployError(f"--iterations must be at least 1, got {self.iterations}")
        if self.iterations is None and (self.duration_s is None or self.duration_s <= 0):
            raise EcaDeployError("--duration must be positive (or give --iterations)")
        if self.warmup_s < 0:
            raise EcaDeployError("--warmup must not be negative")


@dataclass
class BatchResult:
    batch: int
    iterations: int
    total_s: float
    images_per_s: float
    inferences_per_s: float
    latency_ms: dict[str, float]  # min, mean, median, p90, p95, p99, max
    split_ms: dict[str, float] | None = None  # mean h2d / compute / d2h (TensorRT)
    stages_ms: dict[str, float] | None = None  # mean preprocess / inference / postprocess (end to end)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def latency_stats(ms: np.ndarray) -> dict[str, float]:
    stats = {"min": float(ms.min()), "mean": float(ms.mean()), "median": float(np.median(ms))}
    stats |= {f"p{p}": float(np.percentile(ms, p)) for p in PERCENTILES if p != 50}
    stats["max"] = float(ms.max())
    return stats


def bench_batch(
    step: Callable[[], StepTimes | None], batch: int, config: BenchConfig, tick: Callable[[float], None] | None = None
) -> BatchResult:
    """Warm up, then time `step` repeatedly; `tick(fraction_done)` reports progress."""
    clock = time.perf_counter
    end = clock() + config.warmup_s
    step()  # at least one warm-up run: first-run allocations never count
    while clock() < end:
        step()
    samples: list[float] = []
    splits: list[StepTimes] = []
    start = clock()
    deadline = start + (config.duration_s or 0.0)
    while True:
        t0 = clock()
        times = step()
        samples.append(clock() - t0)
        if times is not None:
            splits.append(times)
        n = len(samples)
        if config.iterations is not None:
            if tick and n % max(1, config.iterations // 50) == 0:
                tick(n / config.iterations)
            if n >= config.iterations:
                break
        else:
            now = clock()
            if tick and n % 10 == 0:
                tick(min(1.0, (now - start) / config.duration_s))  # type: ignore[operator]
            if now >= deadline:
                break
    total = clock() - start
    ms = np.asarray(samples) * 1e3
    per_step = getattr(step, "inferences", 1)  # several concurrent streams run one inference each
    split = None
    if splits:
        split = {k: float(np.mean([getattr(s, k) for s in splits])) for k in ("h2d_ms", "compute_ms", "d2h_ms")}
    inferences = len(samples) * per_step
    return BatchResult(batch, len(samples), total, batch * inferences / total, inferences / total,
                       latency_stats(ms), split)  # fmt: skip


def input_shape(runner: Runner, batch: int, img_size: int | None) -> tuple[int, ...]:
    info = runner.inputs[0]
    n, c, h, w = info.shape
    if isinstance(n, int) and n != batch:
        raise EcaDeployError(f"{runner.name} model has a static batch of {n}: use --batch {n}")
    size_h = h if isinstance(h, int) else img_size
    size_w = w if isinstance(w, int) else img_size
    if size_h is None or size_w is None:
        raise EcaDeployError("the model's input size is dynamic: pass --img-size")
    return (batch, c if isinstance(c, int) else 3, size_h, size_w)


def bench_runner(
    runner: Runner,
    config: BenchConfig,
    img_size: int | None = None,
    on_batch: Callable[[int], Callable[[float], None]] | None = None,
) -> list[BatchResult]:
    """Benchmark every batch size of `config` on `runner` (inputs: fixed random normal images)."""
    config.validate()
    if config.end_to_end:
        return bench_end_to_end(runner, config, on_batch)
    results = []
    rng = np.random.default_rng(0)
    dtype = np.float16 if "float16" in runner.inputs[0].dtype else np.float32
    for batch in config.batches:
        shape = input_shape(runner, batch, img_size)
        feed = {runner.inputs[0].name: rng.standard_normal(shape).astype(dtype)}
        step = runner.make_step(feed, config.step)
        results.append(bench_batch(step, batch, config, on_batch(batch) if on_batch else None))
    return results


def bench_end_to_end(
    runner: Runner, config: BenchConfig, on_batch: Callable[[int], Callable[[float], None]] | None = None
) -> list[BatchResult]:
    """Time `Classifier.classify` on batches of the sample photographs (uint8 frames of their own sizes)."""
    from eca_deploy.data.images import read_rgb, sample_image_paths
    from eca_deploy.runtime import Classifier

    classifier = Classifier.from_runner(runner, channel_order="RGB")
    photos = [read_rgb(p) for p in sample_image_paths()]
    results = []
    for batch in config.batches:
        frames = [photos[i % len(photos)] for i in range(batch)]
        stages: list[tuple[float, float, float]] = []

        def step(frames: list[np.ndarray] = frames, stages: list[tuple[float, float, float]] = stages) -> None:
            t = classifier.classify_timed(frames)[1]
            stages.append((t.preprocess_ms, t.inference_ms, t.postprocess_ms))

        result = bench_batch(step, batch, config, on_batch(batch) if on_batch else None)
        mean = np.asarray(stages[-result.iterations :]).mean(axis=0)
        result.stages_ms = {"preprocess_ms": float(mean[0]), "inference_ms": float(mean[1]),
                            "postprocess_ms": float(mean[2])}  # fmt: skip
        results.append(result)
    return results

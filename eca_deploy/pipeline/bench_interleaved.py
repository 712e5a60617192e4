"""Time one model on several runtimes in interleaved rounds, so that load and clock drift hit all of them alike."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from eca_deploy.backends.base import Runner
from eca_deploy.pipeline.bench import BenchConfig, bench_batch, input_shape


def bench_interleaved(
    runners: Mapping[str, Runner], config: BenchConfig, img_size: int | None = None, rounds: int = 3
) -> dict[str, list[dict[str, Any]]]:
    """{label: one result per batch size}: each batch size runs `rounds` rounds, each round times every runner for
    duration/rounds (the order rotates), after one warm-up per runner.

    A result is `BatchResult.as_dict()` of the runner's median round, with `rounds_images_per_s` (every round) and
    `ratio_to_first` (this runner's images/s over the first runner's, per round) added.
    """
    config.validate()
    labels = list(runners)
    per_round = replace(config, duration_s=(config.duration_s or 1.0) / rounds, warmup_s=0.0)
    out: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    rng = np.random.default_rng(0)
    for batch in config.batches:
        steps = {}
        for label, runner in runners.items():
            dtype = np.float16 if "float16" in runner.inputs[0].dtype else np.float32
            feed = {runner.inputs[0].name: rng.standard_normal(input_shape(runner, batch, img_size)).astype(dtype)}
            steps[label] = runner.make_step(feed, config.step)
            bench_batch(steps[label], batch, replace(config, duration_s=config.warmup_s or 0.1, warmup_s=0.0))
        results: dict[str, list[Any]] = {label: [] for label in labels}
        for r in range(rounds):
            shift = r % len(labels)
            for label in labels[shift:] + labels[:shift]:
                results[label].append(bench_batch(steps[label], batch, per_round))
        first = [res.images_per_s for res in results[labels[0]]]
        for label in labels:
            rates = [res.images_per_s for res in results[label]]
            median_round = results[label][int(np.argsort(rates)[len(rates) // 2])]
            entry = median_round.as_dict()
            entry["rounds_images_per_s"] = rates
            entry["ratio_to_first"] = [a / b for a, b in zip(rates, first, strict=True)]
            out[label].append(entry)
    return out

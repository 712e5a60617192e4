"""How much does `eca-deploy bench`'s measuring loop cost? Compare it with a bare `session.run` loop.

Both loops run the same ONNX Runtime session on the same inputs, interleaved in rounds so that clock
and thermal drift hit both alike; the script prints throughput of each and the difference.

    python scripts/bench_overhead.py --model eca_mobilenetv2 --img-size 224 --batch 1 --rounds 5 --seconds 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from eca_deploy.backends.base import StepOptions
from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner
from eca_deploy.exporters import ExportOptions, export_onnx
from eca_deploy.models import create_model
from eca_deploy.onnx_io import save_onnx
from eca_deploy.pipeline.bench import BenchConfig, bench_batch


def bare_loop(session, feed: dict, seconds: float) -> float:
    """Inferences per second of `session.run` in a plain while loop."""
    names = [o.name for o in session.get_outputs()]
    session.run(names, feed)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(names, feed)
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="eca_mobilenetv2")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        save_onnx(export_onnx(create_model(args.model), args.model, ExportOptions(img_size=args.img_size)), path)
        runner = OnnxRuntimeRunner(path, "cpu", threads=args.threads)
        x = np.random.default_rng(0).standard_normal((args.batch, 3, args.img_size, args.img_size), np.float32)
        feed = {runner.inputs[0].name: x}
        config = BenchConfig(batches=(args.batch,), warmup_s=0.5, duration_s=args.seconds)
        bare, ours = [], []
        for _ in range(args.rounds):
            bare.append(bare_loop(runner.session, feed, args.seconds))
            step = runner.make_step(feed, StepOptions())
            ours.append(bench_batch(step, args.batch, config).inferences_per_s)
    b, o = float(np.median(bare)), float(np.median(ours))
    size = f"{args.img_size}x{args.img_size}"
    print(f"model {args.model} {size}, batch {args.batch}, {args.rounds} rounds of {args.seconds}s")
    print(f"bare session.run loop : {b:9.1f} inferences/s (median of rounds)")
    print(f"eca-deploy bench loop : {o:9.1f} inferences/s (median of rounds)")
    print(f"difference            : {100 * (o - b) / b:+.1f}%")


if __name__ == "__main__":
    main()

"""Time the ECA CUDA kernels (fused, two-pass, auto) against PyTorch eager and torch.compile on a CUDA GPU.

Shapes are the ECA layers of ECA-MobileNetV2 (width 1.0) and ECA-ResNet-50 at 224x224, batch 1 and 32. Each time
is the median over rounds of CUDA-event timings of back-to-back calls. Bandwidth counts the minimum traffic
(read X once, write Y once) and is compared with a device-to-device copy of the same tensor.

    python scripts/bench_eca_kernels.py [--kernels build/plugins] [--dtype fp16] [--batch 1 32] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import torch

from eca_deploy.errors import EcaDeployError
from eca_deploy.models.eca import ECALayer
from eca_deploy.plugin.kernels import EcaKernels

# (model, channels, height = width, k) at 224x224
SHAPES = [
    *[("eca_mobilenetv2", c, hw, 1 if c < 96 else 3)
      for c, hw in [(16, 112), (24, 56), (32, 28), (64, 14), (96, 14), (160, 7), (320, 7)]],
    *[("eca_resnet50", c, hw, k) for c, hw, k in [(256, 56, 3), (512, 28, 5), (1024, 14, 5), (2048, 7, 7)]],
]  # fmt: skip
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2}  # against eager PyTorch, which gates in the input's type


def time_us(fn: Callable[[], object], iters: int, rounds: int) -> float:
    """Median over `rounds` of the mean time of `iters` back-to-back calls, in microseconds."""
    for _ in range(max(3, iters // 10)):
        fn()
    samples = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1000 / iters)
    return sorted(samples)[len(samples) // 2]


def bench_shape(kernels: EcaKernels, model: str, c: int, hw: int, k: int, n: int, dtype: torch.dtype, args) -> dict:
    x = torch.randn(n, c, hw, hw, device="cuda", dtype=dtype)
    y = torch.empty_like(x)
    layer = ECALayer(c, k).cuda().to(dtype).eval()
    weights = layer.conv.weight.detach().float().cpu().reshape(-1).numpy()
    moved = 2 * x.numel() * x.element_size()
    row: dict[str, object] = {"model": model, "shape": [n, c, hw, hw], "k": k, "dtype": str(dtype).split(".")[-1],
                              "bytes": moved, "auto_path": kernels.select_path(x.shape, k, dtype)}  # fmt: skip
    timings = {"copy": lambda: y.copy_(x)}
    for path in ("fused", "two_pass", "auto"):
        try:
            kernels.forward(x, weights, path=path, out=y)
        except EcaDeployError:  # the fused path does not fit this shape on this GPU
            continue
        with torch.no_grad():
            torch.testing.assert_close(y, layer(x), rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
        timings[path] = lambda path=path: kernels.forward(x, weights, path=path, out=y)
    with torch.inference_mode():
        timings["eager"] = lambda: layer(x)
        if args.compile:
            torch._dynamo.reset()  # a fresh cache per shape: no recompile limit, no dynamic-shape fallback
            compiled = torch.compile(layer, dynamic=False)
            compiled(x)
            timings["compile"] = lambda: compiled(x)
        for name, fn in timings.items():
            us = time_us(fn, args.iters, args.rounds)
            row[f"{name}_us"] = round(us, 2)
            row[f"{name}_gbps"] = round(moved / us / 1e3, 1)
    return row


def markdown(rows: list[dict]) -> str:
    names = ["copy", "fused", "two_pass", "auto", "eager", "compile"]
    shown = [n for n in names if any(f"{n}_us" in r for r in rows)]
    head = ["model", "N x C x H x W", "k", "dtype", "auto path", *[f"{n} us (GB/s)" for n in shown], "auto / copy"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["model"], "x".join(map(str, r["shape"])), str(r["k"]), r["dtype"], r["auto_path"]]
        cells += [f"{r[f'{n}_us']:.1f} ({r[f'{n}_gbps']:.0f})" if f"{n}_us" in r else "-" for n in shown]
        cells.append(f"{r['auto_gbps'] / r['copy_gbps']:.0%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", default=None, help="libeca_kernels.so or its folder [default: build/plugins]")
    parser.add_argument("--dtype", choices=[*DTYPES, "both"], default="both")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--iters", type=int, default=200, help="calls per timing round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: needs a CUDA GPU and a CUDA build of PyTorch", file=sys.stderr)
        return 2
    try:
        kernels = EcaKernels(args.kernels)
    except EcaDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dtypes = list(DTYPES.values()) if args.dtype == "both" else [DTYPES[args.dtype]]
    rows = [bench_shape(kernels, model, c, hw, k, n, dtype, args)
            for dtype in dtypes for n in args.batch for model, c, hw, k in SHAPES]  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {kernels.path}\n")
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

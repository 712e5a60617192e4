"""Time the ECA CUDA kernels (fused, two-pass, auto) against PyTorch eager and torch.compile on a CUDA GPU.

Shapes are the ECA layers of ECA-MobileNetV2 (width 1.0) and ECA-ResNet-50 at 224x224, batch 1 and 32. Each
variant's `--iters` calls are captured once in a CUDA graph, so a replay times the kernels alone: no Python, ctypes
or launch cost between calls (at batch 1 a call costs more than the kernels it launches). The variants of a shape
are timed in interleaved rounds (one replay of each per round); a time is the median over rounds, with the spread
(max - min over median). Bandwidth counts the minimum traffic (read X once, write Y once) and is compared with a
device-to-device copy of the same tensor. The residual variant (ECA-ResNet-50 shapes) times the kernels' residual +
ReLU form against PyTorch's relu(eca(x) + identity), eager and compiled (minimum traffic 3 tensors).

    python scripts/bench_eca_kernels.py [--kernels build/plugins] [--dtype fp16] [--batch 1 32] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
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


def capture(fn: Callable[[], object], iters: int) -> torch.cuda.CUDAGraph:
    """A CUDA graph of `iters` calls of `fn`, after warm-up calls outside the capture (lazy init, opt-ins)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        for _ in range(iters):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    return graph


def time_graphs(graphs: dict[str, torch.cuda.CUDAGraph], iters: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Microseconds per call of each graph (median over interleaved rounds) and the spread, (max - min) / median."""
    samples: dict[str, list[float]] = {name: [] for name in graphs}
    for _ in range(rounds):
        for name, graph in graphs.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            samples[name].append(start.elapsed_time(end) * 1000 / iters)
    out = {}
    for name, values in samples.items():
        median = statistics.median(values)
        out[name] = (median, (max(values) - min(values)) / median if median else 0.0)
    return out


class ResidualBlockTail(torch.nn.Module):
    """relu(eca(x) + identity): the end of every ECA-ResNet block, in PyTorch."""

    def __init__(self, layer: ECALayer) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.layer(x) + identity)


def bench_shape(kernels: EcaKernels, model: str, c: int, hw: int, k: int, n: int, dtype: torch.dtype, args,
                residual: bool = False) -> dict:  # fmt: skip
    """One layer shape; with `residual`, the residual + ReLU variant against relu(eca(x) + identity)."""
    x = torch.randn(n, c, hw, hw, device="cuda", dtype=dtype)
    identity = torch.randn_like(x) if residual else None
    y = torch.empty_like(x)
    layer = ECALayer(c, k).cuda().to(dtype).eval()
    module = ResidualBlockTail(layer) if residual else layer
    inputs = (x, identity) if residual else (x,)
    extra = {"residual": identity, "activation": "relu"} if residual else {}
    weights = layer.conv.weight.detach().float().cpu().reshape(-1).numpy()
    moved = (3 if residual else 2) * x.numel() * x.element_size()
    row: dict[str, object] = {"model": model, "shape": [n, c, hw, hw], "k": k, "dtype": str(dtype).split(".")[-1],
                              "variant": "residual+relu" if residual else "eca", "bytes": moved,
                              "auto_path": kernels.select_path(x.shape, k, dtype, residual=residual)}  # fmt: skip
    calls: dict[str, Callable[[], object]] = {"copy": lambda: y.copy_(x)}
    for path in ("fused", "two_pass", "auto"):
        try:
            kernels.forward(x, weights, path=path, out=y, **extra)
        except EcaDeployError:  # the fused path does not fit this shape on this GPU
            continue
        with torch.no_grad():
            torch.testing.assert_close(y, module(*inputs), rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
        calls[path] = lambda path=path: kernels.forward(x, weights, path=path, out=y, **extra)
    with torch.inference_mode():
        calls["eager"] = lambda: module(*inputs)
        if args.compile:
            torch._dynamo.reset()  # a fresh cache per shape: no recompile limit, no dynamic-shape fallback
            try:
                compiled = torch.compile(module, dynamic=False)
                compiled(*inputs)
                calls["compile"] = lambda: compiled(*inputs)
            except Exception as exc:  # a broken backend: the kernels' numbers still count
                args.compile = False
                print(f"skipping torch.compile: it failed ({type(exc).__name__}: {str(exc)[:200]})", file=sys.stderr)
        graphs = {name: capture(fn, args.iters) for name, fn in calls.items()}
        for name, (us, spread) in time_graphs(graphs, args.iters, args.rounds).items():
            row[f"{name}_us"] = round(us, 2)
            row[f"{name}_gbps"] = round(moved / us / 1e3, 1)
            row[f"{name}_spread"] = round(spread, 3)
    return row


def markdown(rows: list[dict]) -> str:
    names = ["copy", "fused", "two_pass", "auto", "eager", "compile"]
    shown = [n for n in names if any(f"{n}_us" in r for r in rows)]
    head = ["model", "N x C x H x W", "k", "dtype", "variant", "auto path"]
    head += [*[f"{n} us (GB/s)" for n in shown], "auto / copy"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["model"], "x".join(map(str, r["shape"])), str(r["k"]), r["dtype"], r["variant"], r["auto_path"]]
        cells += [f"{r[f'{n}_us']:.1f} ({r[f'{n}_gbps']:.0f}) ±{r[f'{n}_spread'] / 2:.0%}" if f"{n}_us" in r else "-"
                  for n in shown]  # fmt: skip
        cells.append(f"{r['auto_gbps'] / r['copy_gbps']:.0%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compile_unavailable() -> str | None:
    """Why torch.compile cannot run on this machine's GPU (None: it can)."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if importlib.util.find_spec("triton") is None:
        return "Triton (torch.compile's GPU code generator) is not installed, as on Jetson"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", default=None, help="libeca_kernels.so or its folder [default: build/plugins]")
    parser.add_argument("--dtype", choices=[*DTYPES, "both"], default="both")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--iters", type=int, default=100, help="calls captured in each variant's CUDA graph")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved replays of every variant")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    parser.add_argument("--no-residual", dest="residual", action="store_false",
                        help="skip the residual + ReLU variant (ECA-ResNet-50 shapes)")  # fmt: skip
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: needs a CUDA GPU and a CUDA build of PyTorch", file=sys.stderr)
        return 2
    try:
        kernels = EcaKernels(args.kernels)
    except EcaDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.compile and (reason := compile_unavailable()) is not None:
        print(f"skipping torch.compile: {reason}", file=sys.stderr)
        args.compile = False
    dtypes = list(DTYPES.values()) if args.dtype == "both" else [DTYPES[args.dtype]]
    rows = [bench_shape(kernels, model, c, hw, k, n, dtype, args)
            for dtype in dtypes for n in args.batch for model, c, hw, k in SHAPES]  # fmt: skip
    if args.residual:  # every ECA-ResNet block ends in relu(eca(x) + identity)
        resnet = [(model, c, hw, k) for model, c, hw, k in SHAPES if model == "eca_resnet50"]
        rows += [bench_shape(kernels, model, c, hw, k, n, dtype, args, residual=True)
                 for dtype in dtypes for n in args.batch for model, c, hw, k in resnet]  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {kernels.path}\n")
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

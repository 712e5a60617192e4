"""Time the ECA CUDA kernels (fused, two-pass, auto) against PyTorch eager and torch.compile on a CUDA GPU.

Shapes are the ECA layers of ECA-MobileNetV2 (width 1.0) and ECA-ResNet-50 at 224x224, batch 1 and 32. Each
variant's `--iters` calls are captured once in a CUDA graph, so a replay times the kernels alone: no Python, ctypes
or launch cost between calls (at batch 1 a call costs more than the kernels it launches). Consecutive calls use
different buffers, rotated through sets that together exceed twice the GPU's L2 cache, so every call reads its input
from device memory (H100's 50 MB L2 holds a whole batch-1 layer: with one buffer the figures would be L2 bandwidth).
The variants of a shape are timed in interleaved rounds (one replay of each per round, the order rotated every
round); a time is the median over rounds, with the spread (max - min over median). Bandwidth counts the minimum
traffic (read X once, write Y once) and is compared with a device-to-device copy of the same tensors. The residual
variant (ECA-ResNet-50 shapes) times the kernels' residual + ReLU form against PyTorch's relu(eca(x) + identity),
eager and compiled (minimum traffic 3 tensors). Each row is printed (and flushed) as soon as it is measured, so a
run stopped by a time limit keeps every row it finished. Needs PyTorch with CUDA and NumPy only (not the CLI's
dependencies).

    python scripts/bench_eca_kernels.py [--kernels build/plugins] [--dtype fp16] [--batch 1 32] [--json]

--json prints one JSON object per row (JSON lines).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script from anywhere: the checkout's eca_deploy
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
ROTATE_BYTES_MAX = 2 << 30  # buffers one variant rotates through, at most (large shapes exceed L2 with few sets)


def rotation_sets(set_bytes: int, l2_bytes: int, limit: int = ROTATE_BYTES_MAX) -> int:
    """Buffer sets to rotate through so that consecutive uses of one set are 2 x L2 apart (at least 2)."""
    return max(2, min(-(-2 * l2_bytes // max(set_bytes, 1)) + 1, max(2, limit // max(set_bytes, 1))))


def round_order(names: list[str], round_index: int) -> list[str]:
    """The variants' order in round `round_index`: rotated by one every round, so none always runs first."""
    shift = round_index % len(names) if names else 0
    return names[shift:] + names[:shift]


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
    for r in range(rounds):
        for name in round_order(list(graphs), r):
            graph = graphs[name]
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
    """One layer shape; with `residual`, the residual + ReLU variant against relu(eca(x) + identity). Every variant
    runs call i on buffer set i mod `sets` (rotation_sets: past the L2 cache)."""
    set_bytes = (3 if residual else 2) * n * c * hw * hw * torch.tensor([], dtype=dtype).element_size()
    sets = rotation_sets(set_bytes, args.l2_bytes)
    xs = [torch.randn(n, c, hw, hw, device="cuda", dtype=dtype) for _ in range(sets)]
    ids = [torch.randn_like(xs[0]) for _ in range(sets)] if residual else [None] * sets
    ys = [torch.empty_like(xs[0]) for _ in range(sets)]
    layer = ECALayer(c, k).cuda().to(dtype).eval()
    module = ResidualBlockTail(layer) if residual else layer
    weights = layer.conv.weight.detach().float().cpu().reshape(-1).numpy()
    x, y = xs[0], ys[0]
    moved = (3 if residual else 2) * x.numel() * x.element_size()
    row: dict[str, object] = {"model": model, "shape": [n, c, hw, hw], "k": k, "dtype": str(dtype).split(".")[-1],
                              "variant": "residual+relu" if residual else "eca", "bytes": moved, "buffer_sets": sets,
                              "auto_path": kernels.select_path(x.shape, k, dtype, residual=residual)}  # fmt: skip
    iters = max(args.iters, sets)
    cursor = [0]

    def rotating(fn: Callable[[int], object]) -> Callable[[], object]:
        def call() -> object:
            i = cursor[0] = (cursor[0] + 1) % sets
            return fn(i)

        return call

    def extra(i: int) -> dict:
        return {"residual": ids[i], "activation": "relu"} if residual else {}

    def inputs(i: int) -> tuple:
        return (xs[i], ids[i]) if residual else (xs[i],)

    calls: dict[str, Callable[[], object]] = {"copy": rotating(lambda i: ys[i].copy_(xs[i]))}
    for path in ("fused", "two_pass", "auto"):
        try:
            kernels.forward(x, weights, path=path, out=y, **extra(0))
        except EcaDeployError:  # the fused path does not fit this shape on this GPU
            continue
        with torch.no_grad():
            torch.testing.assert_close(y, module(*inputs(0)), rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
        calls[path] = rotating(lambda i, path=path: kernels.forward(xs[i], weights, path=path, out=ys[i], **extra(i)))
    with torch.inference_mode():
        calls["eager"] = rotating(lambda i: module(*inputs(i)))
        if args.compile:
            torch._dynamo.reset()  # a fresh cache per shape: no recompile limit, no dynamic-shape fallback
            try:
                compiled = torch.compile(module, dynamic=False)
                compiled(*inputs(0))
                calls["compile"] = rotating(lambda i: compiled(*inputs(i)))
            except Exception as exc:  # a broken backend: the kernels' numbers still count
                args.compile = False
                print(f"skipping torch.compile: it failed ({type(exc).__name__}: {str(exc)[:200]})", file=sys.stderr)
        graphs = {name: capture(fn, iters) for name, fn in calls.items()}
        for name, (us, spread) in time_graphs(graphs, iters, args.rounds).items():
            row[f"{name}_us"] = round(us, 2)
            row[f"{name}_gbps"] = round(moved / us / 1e3, 1)
            row[f"{name}_spread"] = round(spread, 3)
    return row


NAMES = ["copy", "fused", "two_pass", "auto", "eager", "compile"]


def markdown_head(shown: list[str]) -> str:
    head = ["model", "N x C x H x W", "k", "dtype", "variant", "auto path", *[f"{n} us (GB/s)" for n in shown],
            "auto / copy"]  # fmt: skip
    return "\n".join(["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)])


def markdown_row(r: dict, shown: list[str]) -> str:
    cells = [r["model"], "x".join(map(str, r["shape"])), str(r["k"]), r["dtype"], r["variant"], r["auto_path"]]
    cells += [f"{r[f'{n}_us']:.1f} ({r[f'{n}_gbps']:.0f}) ±{r[f'{n}_spread'] / 2:.0%}" if f"{n}_us" in r else "-"
              for n in shown]  # fmt: skip
    cells.append(f"{r['auto_gbps'] / r['copy_gbps']:.0%}")
    return "| " + " | ".join(cells) + " |"


def markdown(rows: list[dict]) -> str:
    shown = [n for n in NAMES if any(f"{n}_us" in r for r in rows)]
    return "\n".join([markdown_head(shown), *(markdown_row(r, shown) for r in rows)])


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
    args.l2_bytes = int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or 64 << 20)
    dtypes = list(DTYPES.values()) if args.dtype == "both" else [DTYPES[args.dtype]]
    todo = [(model, c, hw, k, n, dtype, False) for dtype in dtypes for n in args.batch for model, c, hw, k in SHAPES]
    if args.residual:  # every ECA-ResNet block ends in relu(eca(x) + identity)
        todo += [(model, c, hw, k, n, dtype, True) for dtype in dtypes for n in args.batch
                 for model, c, hw, k in SHAPES if model == "eca_resnet50"]  # fmt: skip
    shown = [n for n in NAMES if n != "compile" or args.compile]
    if not args.json:
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {kernels.path}, L2 {args.l2_bytes >> 20} MB "
              "(buffers rotated past 2 x L2)\n", flush=True)  # fmt: skip
        print(markdown_head(shown), flush=True)
    for model, c, hw, k, n, dtype, residual in todo:
        row = bench_shape(kernels, model, c, hw, k, n, dtype, args, residual=residual)
        print(json.dumps(row) if args.json else markdown_row(row, shown), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

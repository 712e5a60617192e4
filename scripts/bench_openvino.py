"""OpenVINO (CPU) on ECA networks: the unfused model, the fused model with the ECA extension, and the no-ECA twin.

For each model and batch size the three variants run in interleaved rounds (the order rotates every round), so
clock and load drift hit all alike; the table gives the median images/s over rounds, the spread (min..max) and the
per-round ratios: fused+extension / unfused (target >= 1) and ECA overhead = unfused / twin - 1 (target <= 10%).
The twin is the fused model with every ECA node replaced by Identity: the same network with the gates removed.
Weights are random (seeded); speed does not depend on them.

    python scripts/bench_openvino.py --models eca_mobilenetv2,eca_resnet50 --batch 1,8 --rounds 7 --seconds 2
    python scripts/bench_openvino.py --models eca_resnet50 --batch 1 --profile   # per-layer PERF_COUNT summary
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from eca_deploy.backends.openvino_runner import OpenVINORunner
from eca_deploy.exporters import ExportOptions, export_onnx
from eca_deploy.fusion import fuse_eca
from eca_deploy.models import create_model
from eca_deploy.ops import ECA_DOMAIN, ECA_OP_TYPE
from eca_deploy.plugin.openvino_build import find_openvino_extension

VARIANTS = ("unfused", "fused+ext", "no-ECA twin")


def without_eca(fused: onnx.ModelProto) -> onnx.ModelProto:
    """The fused network with each ECA node replaced by Identity (residual/ReLU variants keep Add/Relu)."""
    twin = onnx.ModelProto()
    twin.CopyFrom(fused)
    nodes = []
    for node in twin.graph.node:
        if node.op_type != ECA_OP_TYPE or node.domain != ECA_DOMAIN:
            nodes.append(node)
            continue
        relu = any(a.name == "activation" and a.s == b"relu" for a in node.attribute)
        out = node.output[0] + "_pre" if (relu or len(node.input) == 2) else node.output[0]
        nodes.append(onnx.helper.make_node("Identity", [node.input[0]], [out if len(node.input) == 1 else out + "x"]))
        if len(node.input) == 2:
            nodes.append(onnx.helper.make_node("Add", [out + "x", node.input[1]], [out]))
        if relu:
            nodes.append(onnx.helper.make_node("Relu", [out], [node.output[0]]))
    del twin.graph.node[:]
    twin.graph.node.extend(nodes)
    del twin.functions[:]
    return twin


def make_models(name: str, img_size: int, folder: Path) -> dict[str, Path]:
    model = export_onnx(create_model(name), name, ExportOptions(img_size=img_size))
    paths = {v: folder / f"{name}.{i}.onnx" for i, v in enumerate(VARIANTS)}
    onnx.save(model, str(paths["unfused"]))
    report = fuse_eca(model)
    if report.count == 0:
        raise SystemExit(f"{name}: no ECA block was fused")
    onnx.save(model, str(paths["fused+ext"]))
    onnx.save(without_eca(model), str(paths["no-ECA twin"]))
    return paths


def throughput(runner: OpenVINORunner, x: np.ndarray, seconds: float) -> float:
    step = runner.make_step({runner.inputs[0].name: x}, None)  # type: ignore[arg-type]
    step()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    return n * len(x) / (time.perf_counter() - start)


def profile(runner: OpenVINORunner, x: np.ndarray, iterations: int = 30) -> dict[str, float]:
    """Median ms per OpenVINO node type (exec type in brackets) over `iterations` inferences."""
    per_type: dict[str, list[float]] = defaultdict(list)
    for _ in range(iterations):
        runner.infer({runner.inputs[0].name: x})
        sums: dict[str, float] = defaultdict(float)
        for row in runner.profile():
            sums[f"{row['type']} [{row['exec_type']}]"] += row["ms"]
        for key, ms in sums.items():
            per_type[key].append(ms)
    return {k: float(np.median(v)) for k, v in sorted(per_type.items(), key=lambda kv: -np.median(kv[1]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="eca_mobilenetv2,eca_resnet50")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--precision", default="f32", help="INFERENCE_PRECISION_HINT, or 'auto' for OpenVINO's pick")
    parser.add_argument("--extension", default=None, help="libeca_openvino_extension.so (default: build/openvino)")
    parser.add_argument("--profile", action="store_true", help="Also print per-layer PERF_COUNT totals by node type")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    extension = find_openvino_extension(args.extension)
    precision = None if args.precision == "auto" else args.precision
    batches = [int(b) for b in args.batch.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            paths = make_models(name, args.img_size, Path(tmp))
            for batch in batches:
                runners = {v: OpenVINORunner(p, threads=args.threads, inference_precision=precision,
                                             extension=extension, batch=batch, perf_counters=args.profile)
                           for v, p in paths.items()}  # fmt: skip
                x = np.random.default_rng(0).standard_normal((batch, 3, args.img_size, args.img_size), np.float32)
                rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
                for r in range(args.rounds):
                    order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
                    for v in order:
                        rates[v].append(throughput(runners[v], x, args.seconds))
                u, f, t = (np.array(rates[v]) for v in VARIANTS)
                row = {
                    "model": name, "batch": batch, "precision": runners["unfused"].inference_precision,
                    "threads": runners["unfused"].threads, "images_per_s": {v: rates[v] for v in VARIANTS},
                    "fused_vs_unfused": (f / u).tolist(), "eca_overhead_unfused": (u / t - 1).tolist(),
                    "eca_overhead_fused": (f / t - 1).tolist(),
                }  # fmt: skip
                if args.profile:
                    row["profile_ms"] = {v: profile(runners[v], x) for v in VARIANTS}
                rows.append(row)
                print_row(row)
    env = {"cpu": cpu_name(), "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "openvino": __import__("openvino").__version__, "python": platform.python_version()}  # fmt: skip
    print(f"\n{env['cpu']}, OpenVINO {env['openvino']}, {env['date']}, {args.rounds} interleaved rounds of "
          f"{args.seconds}s per variant; random weights")  # fmt: skip
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "args": vars(args) | {"json": str(args.json)},
                                         "rows": rows}, indent=2) + "\n")  # fmt: skip


def _med_range(values: list[float], fmt: str = "{:.1f}") -> str:
    return f"{fmt.format(np.median(values))} ({fmt.format(min(values))}..{fmt.format(max(values))})"


def print_row(row: dict[str, Any]) -> None:
    print(f"{row['model']} batch {row['batch']} ({row['precision']}, {row['threads']} threads): "
          + ", ".join(f"{v} {np.median(r):.1f} img/s" for v, r in row["images_per_s"].items()))  # fmt: skip
    for variant, table in row.get("profile_ms", {}).items():
        total = sum(table.values())
        top = ", ".join(f"{k} {ms:.2f}" for k, ms in list(table.items())[:8])
        print(f"  profile {variant}: {total:.2f} ms in nodes; {top}")


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n| model | batch | precision | unfused img/s | fused+ext img/s | no-ECA twin img/s | fused / unfused "
          "| ECA overhead, unfused | ECA overhead, fused+ext |")  # fmt: skip
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        ips = r["images_per_s"]
        pct = [f"{100 * x:+.1f}%" for x in (np.median(r["eca_overhead_unfused"]), min(r["eca_overhead_unfused"]),
                                            max(r["eca_overhead_unfused"]))]  # fmt: skip
        pf = [f"{100 * x:+.1f}%" for x in (np.median(r["eca_overhead_fused"]), min(r["eca_overhead_fused"]),
                                           max(r["eca_overhead_fused"]))]  # fmt: skip
        print(f"| {r['model']} | {r['batch']} | {r['precision']} | {_med_range(ips['unfused'])} "
              f"| {_med_range(ips['fused+ext'])} | {_med_range(ips['no-ECA twin'])} "
              f"| {_med_range(r['fused_vs_unfused'], '{:.3f}')} | {pct[0]} ({pct[1]}..{pct[2]}) "
              f"| {pf[0]} ({pf[1]}..{pf[2]}) |")  # fmt: skip


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()

"""OpenVINO (CPU) on ECA networks: the unfused model, the fused model with the ECA extension, and the no-ECA twin.

For each model and batch size the three variants run in interleaved rounds (the order rotates every round), so
clock and load drift hit all alike; the table gives the median images/s over rounds, the spread (min..max) and the
per-round ratios: fused+extension / unfused throughput (target >= 1) and ECA overhead = time / twin's time - 1
(target <= 10%). Fused variants: "fused+ext" converts each ECA node to the extension's fused CPU op, "fused+ext
opset" to OpenVINO's standard ops (ECA_DEPLOY_OPENVINO_LOWERING=opset). The fused model folds the residual Add and
ReLU after each ECA into the node (the contract's residual form). The twin is the fused model with every ECA node
replaced by Identity: the same network with the gates removed.
Weights are random (seeded); speed does not depend on them.

    python scripts/bench_openvino.py --models eca_mobilenetv2,eca_resnet50 --batch 1,8 --rounds 7 --seconds 2
    python scripts/bench_openvino.py --models eca_resnet50 --batch 1 --profile   # per-layer PERF_COUNT summary
    python scripts/bench_openvino.py --layers --batch 1,8     # the ECA op alone on ECA-ResNet-50's layer shapes

`--layers` times one ECA node (residual and ReLU, as in ECA-ResNet-50's blocks) on plain NCHW tensors, in both
conversions: the extension's op and OpenVINO's standard ops; that is the kernel without the layout reorders.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from eca_deploy.backends.openvino_runner import OpenVINORunner
from eca_deploy.environment import cpu_model
from eca_deploy.exporters import ExportOptions, export_onnx
from eca_deploy.fusion import fuse_eca
from eca_deploy.models import create_model
from eca_deploy.ops import ECA_DOMAIN, ECA_OP_TYPE
from eca_deploy.plugin.openvino_build import find_openvino_extension

VARIANTS = ("unfused", "fused+ext", "fused+ext opset", "no-ECA twin")
FILES = {"unfused": "unfused", "fused+ext": "fused", "fused+ext opset": "fused", "no-ECA twin": "twin"}
LOWERING = {"fused+ext": "op", "fused+ext opset": "opset"}


def without_eca(fused: onnx.ModelProto, floor: bool = False) -> onnx.ModelProto:
    """The fused network with the gates removed: ECA(X) -> Identity, ECA(X, R) -> Add(X, R), then Relu if asked.

    `floor` keeps ECA's memory traffic without its gate (ECA's floor in the network): X is scaled by its own
    pooled means, Mul(X, GlobalAveragePool(X)), before the residual Add and Relu: one pool and one scaling pass.
    """
    twin = onnx.ModelProto()
    twin.CopyFrom(fused)
    nodes: list[onnx.NodeProto] = []
    for node in twin.graph.node:
        if node.op_type != ECA_OP_TYPE or node.domain != ECA_DOMAIN:
            nodes.append(node)
            continue
        relu = any(a.name == "activation" and a.s == b"relu" for a in node.attribute)
        out = node.output[0]
        inner = f"{out}_no_eca" if relu else out
        x = node.input[0]
        if floor:
            scaled = f"{out}_scaled" if len(node.input) == 2 else inner
            nodes.append(onnx.helper.make_node("GlobalAveragePool", [x], [f"{out}_mean"], name=f"{node.name}_pool"))
            nodes.append(onnx.helper.make_node("Mul", [x, f"{out}_mean"], [scaled], name=f"{node.name}_scale"))
            x = scaled
        if len(node.input) == 1:
            if not floor:
                nodes.append(onnx.helper.make_node("Identity", [x], [inner], name=node.name))
        else:
            nodes.append(onnx.helper.make_node("Add", [x, node.input[1]], [inner], name=node.name))
        if relu:
            nodes.append(onnx.helper.make_node("Relu", [inner], [out], name=f"{node.name}_relu"))
    del twin.graph.node[:]
    twin.graph.node.extend(nodes)
    del twin.functions[:]
    return twin


def absorb_residual(model: onnx.ModelProto) -> int:
    """Fold `Add(ECA(x), skip)` and a following Relu into the ECA node (the contract's residual form), in place.

    Finds nothing where the fusion pass already emits the residual form; returns how many nodes were folded.
    """
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    outputs = {o.name for o in model.graph.output}
    removed: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type != ECA_OP_TYPE or node.domain != ECA_DOMAIN or len(node.input) != 1:
            continue
        after = consumers[node.output[0]]
        if len(after) != 1 or after[0].op_type != "Add" or node.output[0] in outputs:
            continue
        add = after[0]
        node.input.append(next(i for i in add.input if i != node.output[0]))
        node.output[0] = add.output[0]
        removed.append(add)
        after = consumers[add.output[0]]
        if len(after) == 1 and after[0].op_type == "Relu" and add.output[0] not in outputs:
            node.attribute.append(onnx.helper.make_attribute("activation", "relu"))
            node.output[0] = after[0].output[0]
            removed.append(after[0])
    for node in removed:
        model.graph.node.remove(node)
    return len(removed)


def make_models(name: str, img_size: int, folder: Path, residual: bool = True) -> dict[str, Path]:
    model = export_onnx(create_model(name), name, ExportOptions(img_size=img_size))
    paths = {v: folder / f"{name}.{v}.onnx" for v in ("unfused", "fused", "twin", "floor")}
    onnx.save(model, str(paths["unfused"]))
    report = fuse_eca(model)
    if report.count == 0:
        raise SystemExit(f"{name}: no ECA block was fused")
    onnx.save(without_eca(model), str(paths["twin"]))
    if residual:
        absorb_residual(model)
    onnx.save(without_eca(model, floor=True), str(paths["floor"]))
    onnx.save(model, str(paths["fused"]))
    return paths


def throughput(runner: OpenVINORunner, x: np.ndarray, seconds: float) -> tuple[float, float]:
    """(images/s by the wall clock, CPU ms of this process per image) over `seconds` of back-to-back inferences.

    On a machine shared with other work the wall clock measures the share of the cores this process got; the
    CPU time it spent per image does not depend on that share (it counts OpenVINO's worker threads too).
    """
    step = runner.make_step({runner.inputs[0].name: x}, None)  # type: ignore[arg-type]
    step()
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    images = n * len(x)
    return images / (time.perf_counter() - start), 1e3 * (time.process_time() - cpu) / images


def profile(runner: OpenVINORunner, x: np.ndarray, iterations: int = 30) -> dict[str, float]:
    """Median ms per OpenVINO node type over `iterations` inferences, keyed "type [exec type] xNODES"."""
    per_type: dict[str, list[float]] = defaultdict(list)
    for _ in range(iterations):
        runner.infer({runner.inputs[0].name: x})
        sums: dict[str, float] = defaultdict(float)
        nodes: dict[str, int] = defaultdict(int)
        for row in runner.profile():
            sums[f"{row['type']} [{row['exec_type']}]"] += row["ms"]
            nodes[f"{row['type']} [{row['exec_type']}]"] += 1
        for key, ms in sums.items():
            per_type[f"{key} x{nodes[key]}"].append(ms)
    return {k: float(np.median(v)) for k, v in sorted(per_type.items(), key=lambda kv: -np.median(kv[1]))}


# ECA-ResNet-50's ECA layers: channels, H=W, k.
RESNET50_LAYERS = ((256, 56, 3), (512, 28, 5), (1024, 14, 5), (2048, 7, 7))


def bench_layers(extension: Path, batches: list[int], rounds: int, threads: int | None) -> None:
    import io

    import openvino as ov
    from onnx import TensorProto, helper

    from eca_deploy.backends.openvino_runner import LOWERING_ENV, scoped_env

    print("| layer (N, C, H=W, k) | op: ms (min..max) | op: CPU ms | opset: ms (min..max) | opset: CPU ms | "
          "opset / op (CPU) |\n| --- | ---: | ---: | ---: | ---: | ---: |")  # fmt: skip
    for batch in batches:
        for c, hw, k in RESNET50_LAYERS:
            shape = [batch, c, hw, hw]
            io_ = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("X", "R", "Y")]
            node = helper.make_node("ECA", ["X", "R"], ["Y"], domain=ECA_DOMAIN, weights=[0.2] * k, activation="relu")
            graph = helper.make_graph([node], "eca", io_[:2], io_[2:])
            model = helper.make_model(
                graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ECA_DOMAIN, 1)]
            ).SerializeToString()
            compiled = {}
            for lowering in ("op", "opset"):
                core = ov.Core()
                core.add_extension(str(extension))
                with scoped_env(LOWERING_ENV, lowering):
                    ov_model = core.read_model(io.BytesIO(model))
                config = {"INFERENCE_PRECISION_HINT": "f32"} | ({"INFERENCE_NUM_THREADS": threads} if threads else {})
                compiled[lowering] = core.compile_model(ov_model, "CPU", config).create_infer_request()
            rng = np.random.default_rng(0)
            feed = [rng.standard_normal(shape, np.float32), rng.standard_normal(shape, np.float32)]
            times: dict[str, list[tuple[float, float]]] = {k_: [] for k_ in compiled}
            n = max(3, int(2e8 / (batch * c * hw * hw * 4)))
            for r in range(rounds):
                for lowering in ("op", "opset")[r % 2 :] + ("op", "opset")[: r % 2]:
                    request = compiled[lowering]
                    request.infer(feed)
                    t0, c0 = time.perf_counter(), time.process_time()
                    for _ in range(n):
                        request.infer(feed, share_inputs=True, share_outputs=True)
                    times[lowering].append(((time.perf_counter() - t0) / n * 1e3, (time.process_time() - c0) / n * 1e3))
            wall = {k_: [w for w, _ in v] for k_, v in times.items()}
            cpu = {k_: [u for _, u in v] for k_, v in times.items()}
            ratio = [b / a for a, b in zip(cpu["op"], cpu["opset"], strict=True)]
            print(f"| {batch}, {c}, {hw}, {k} | {_med_range(wall['op'], '{:.3f}')} | {np.median(cpu['op']):.3f} "
                  f"| {_med_range(wall['opset'], '{:.3f}')} | {np.median(cpu['opset']):.3f} "
                  f"| {_med_range(ratio, '{:.2f}')} |", flush=True)  # fmt: skip


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
    parser.add_argument("--no-residual", action="store_true", help="Keep the Add/ReLU after each ECA node separate")
    parser.add_argument("--layers", action="store_true", help="Time the ECA op alone on ECA-ResNet-50's layers")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    extension = find_openvino_extension(args.extension)
    if args.layers:
        bench_layers(extension, [int(b) for b in args.batch.split(",")], args.rounds, args.threads)
        return
    precision = None if args.precision == "auto" else args.precision
    batches = [int(b) for b in args.batch.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            paths = make_models(name, args.img_size, Path(tmp), residual=not args.no_residual)
            for batch in batches:
                runners = {v: OpenVINORunner(paths[FILES[v]], threads=args.threads, inference_precision=precision,
                                             extension=extension, batch=batch, perf_counters=args.profile,
                                             eca_lowering=LOWERING.get(v))
                           for v in VARIANTS}  # fmt: skip
                x = np.random.default_rng(0).standard_normal((batch, 3, args.img_size, args.img_size), np.float32)
                rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
                cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
                for r in range(args.rounds):
                    shift = r % len(VARIANTS)
                    for v in VARIANTS[shift:] + VARIANTS[:shift]:
                        rate, cpu_ms = throughput(runners[v], x, args.seconds)
                        rates[v].append(rate)
                        cpu[v].append(cpu_ms)
                a = {v: np.array(rates[v]) for v in VARIANTS}
                c = {v: np.array(cpu[v]) for v in VARIANTS}
                row = {
                    "model": name, "batch": batch, "precision": runners["unfused"].inference_precision,
                    "threads": runners["unfused"].threads, "images_per_s": rates,
                    "vs_unfused": {v: (a[v] / a["unfused"]).tolist() for v in VARIANTS if v.startswith("fused")},
                    "eca_overhead": {v: (a["no-ECA twin"] / a[v] - 1).tolist() for v in VARIANTS if v != "no-ECA twin"},
                    "cpu_ms_per_image": cpu,
                    "cpu_vs_unfused": {v: (c["unfused"] / c[v]).tolist() for v in VARIANTS if v.startswith("fused")},
                    "cpu_eca_overhead": {v: (c[v] / c["no-ECA twin"] - 1).tolist()
                                         for v in VARIANTS if v != "no-ECA twin"},
                }  # fmt: skip
                if args.profile:
                    row["profile_ms"] = {v: profile(runners[v], x) for v in VARIANTS}
                rows.append(row)
                print_row(row)
    env = {
        "cpu": cpu_model(),
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "openvino": __import__("openvino").__version__,
        "python": platform.python_version(),
    }
    print(f"\n{env['cpu']} ({os.cpu_count()} cores, load average {env['load_average']}), OpenVINO "
          f"{env['openvino'].split('-')[0]}, {env['date']}, {args.rounds} interleaved rounds of {args.seconds}s per "
          "variant; random weights")  # fmt: skip
    print_table(rows)
    print_cpu_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "args": vars(args) | {"json": str(args.json)},
                                         "rows": rows}, indent=2) + "\n")  # fmt: skip


def _med_range(values: list[float], fmt: str = "{:.1f}") -> str:
    return f"{fmt.format(np.median(values))} ({fmt.format(min(values))}..{fmt.format(max(values))})"


def print_row(row: dict[str, Any]) -> None:
    print(f"{row['model']} batch {row['batch']} ({row['precision']}, {row['threads']} threads): "
          + ", ".join(f"{v} {np.median(r):.1f} img/s {np.median(row['cpu_ms_per_image'][v]):.2f} CPU ms/img"
                      for v, r in row["images_per_s"].items()), flush=True)  # fmt: skip
    for variant, table in row.get("profile_ms", {}).items():
        total = sum(table.values())
        top = ", ".join(f"{k} {ms:.2f}" for k, ms in list(table.items())[:10])
        print(f"  profile {variant}: {total:.2f} ms in nodes; {top}")


def print_table(rows: list[dict[str, Any]]) -> None:
    """Markdown: median (min..max) over rounds; ratios and overheads are per round (same round, same load)."""
    fused = [v for v in VARIANTS if v.startswith("fused")]
    heads = [f"{v} img/s" for v in VARIANTS] + [f"{v} / unfused" for v in fused]
    heads += [f"ECA overhead {v}" for v in VARIANTS if v != "no-ECA twin"]
    print("\n| model | batch | precision | " + " | ".join(heads) + " |")
    print("| --- | ---: | --- | " + " | ".join("---:" for _ in heads) + " |")
    for r in rows:
        cells = [_med_range(r["images_per_s"][v]) for v in VARIANTS]
        cells += [_med_range(r["vs_unfused"][v], "{:.3f}") for v in fused]
        cells += [_pct(r["eca_overhead"][v]) for v in VARIANTS if v != "no-ECA twin"]
        print(f"| {r['model']} | {r['batch']} | {r['precision']} | " + " | ".join(cells) + " |")


def print_cpu_table(rows: list[dict[str, Any]]) -> None:
    """The same by CPU time per image (unfused / fused > 1: fused costs less CPU)."""
    fused = [v for v in VARIANTS if v.startswith("fused")]
    heads = [f"{v} CPU ms/img" for v in VARIANTS] + [f"unfused / {v}" for v in fused]
    heads += [f"ECA CPU overhead {v}" for v in VARIANTS if v != "no-ECA twin"]
    print("\n| model | batch | precision | " + " | ".join(heads) + " |")
    print("| --- | ---: | --- | " + " | ".join("---:" for _ in heads) + " |")
    for r in rows:
        cells = [_med_range(r["cpu_ms_per_image"][v], "{:.2f}") for v in VARIANTS]
        cells += [_med_range(r["cpu_vs_unfused"][v], "{:.3f}") for v in fused]
        cells += [_pct(r["cpu_eca_overhead"][v]) for v in VARIANTS if v != "no-ECA twin"]
        print(f"| {r['model']} | {r['batch']} | {r['precision']} | " + " | ".join(cells) + " |")


def _pct(values: list[float]) -> str:
    med, lo, hi = (100 * x for x in (np.median(values), min(values), max(values)))
    return f"{med:+.1f}% ({lo:+.1f}..{hi:+.1f})"


if __name__ == "__main__":
    main()

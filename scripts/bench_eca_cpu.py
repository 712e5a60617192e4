"""ECA's cost on the CPU runtimes: ONNX Runtime and OpenVINO, unfused, fused and the no-ECA twin, in one run.

For each model, every variant runs in interleaved rounds (the order rotates every round), so clock and load drift
hit all alike; each variant's turn is one warm call, then calls for `--seconds`. Short turns and many rounds keep the
variants of one round close in time, so a drift in the machine's speed hits them alike. The table
gives the median ms per inference over rounds with the interquartile range [q1..q3]; the ratios are per round
(same round, same load), median [q1..q3]: ECA's overhead, time / twin's time - 1, and the fused model against the
unfused one on the same runtime, time / unfused time - 1.

  ORT unfused          the exported model, ECA blocks as GlobalAveragePool, Conv1d, Sigmoid, Mul, Add, Relu
  ORT fused (function) the fused model (ECA nodes with the residual Add and ReLU folded in), run through its ONNX
                       function: what ONNX Runtime does without the custom-op library
  ORT fused (native)   the same file with libeca_onnxruntime_op.so registered, through the runner: the native CPU
                       kernel, in ONNX Runtime's blocked NCHWc layout where ONNX Runtime runs the convolutions
                       around the ECA nodes in it (the runner's `eca_implementation`, printed below the table)
  OV unfused / OV op / OV opset   OpenVINO: the unfused model, the fused model through the extension's op, and
                       through its lowering to OpenVINO's own ops (ECA_DEPLOY_OPENVINO_LOWERING)
  OV floor             ECA's floor in the network: the fused model with every ECA node replaced by a global
                       average pool of X and one pass Mul(X, mean) (+ R, ReLU): ECA's memory traffic, no gate
  twin                 the fused model with every ECA node replaced by its residual Add (and ReLU): no gates

`--floor` also times, on the ECA layers' own shapes, the memory floor of ECA: a global average pool (ECA's extra
read of X) plus one pass that reads X (and the identity) and writes Y (Add(X, R), or Relu(X) without a residual),
beside the native ECA nodes alone; each as one ONNX Runtime graph holding every ECA layer of the network.
Weights are random (seeded); speed does not depend on them.

    python scripts/bench_eca_cpu.py --models eca_resnet50,eca_mobilenetv2 --rounds 60 --seconds 0.1 --floor
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_openvino import make_models  # the unfused / fused / twin / floor files: shared

from eca_deploy.environment import cpu_model
from eca_deploy.ops import ECA_DOMAIN, ECA_OP_TYPE, is_eca_node

ORT = ("ORT unfused", "ORT fused (function)", "ORT fused (native)", "ORT twin")
OV = ("OV unfused", "OV op", "OV opset", "OV floor", "OV twin")


def make_runners(paths: dict[str, Path], threads: int, ort_library: Path | None, ov_extension: Path | None,
                 variants: list[str]) -> dict:  # fmt: skip
    """The runner of each of `variants`; a runtime or library that is missing leaves its variants out."""
    from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner

    def ort_runner(file: str, eca_op: Path | bool = False) -> Callable[[], object]:
        return lambda: OnnxRuntimeRunner(paths[file], threads=threads, eca_op=eca_op)

    build = {"ORT unfused": ort_runner("unfused"), "ORT fused (function)": ort_runner("fused"),
             "ORT twin": ort_runner("twin")}  # fmt: skip
    if ort_library is not None:
        build["ORT fused (native)"] = ort_runner("fused", ort_library)
    try:
        from eca_deploy.backends.openvino_runner import OpenVINORunner
    except ImportError:
        return {v: build[v]() for v in variants if v in build}
    common = {"threads": threads, "inference_precision": "f32", "extension": ov_extension}

    def ov_runner(file: str, lowering: str | None = None) -> Callable[[], object]:
        return lambda: OpenVINORunner(paths[file], eca_lowering=lowering, **common)

    build |= {"OV unfused": ov_runner("unfused"), "OV twin": ov_runner("twin"), "OV floor": ov_runner("floor")}
    if ov_extension is not None:
        build |= {"OV op": ov_runner("fused", "op"), "OV opset": ov_runner("fused", "opset")}
    return {v: build[v]() for v in variants if v in build}


# A pause before each turn: the previous variant's idle worker threads spin for a while after its last call
# (ONNX Runtime's thread pool, OpenVINO's TBB arena), and with short turns they would slow the next variant down.
SETTLE_S = 0.05


def ms_per_call(step: Callable[[], object], seconds: float) -> float:
    """Mean ms of back-to-back calls of `step` over about `seconds`, at least one (after one warm call)."""
    step()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 1:
        step()
        n += 1
    return (time.perf_counter() - start) / n * 1e3


def interleaved(steps: dict[str, Callable[[], object]], rounds: int, seconds: float) -> dict[str, list[float]]:
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            time.sleep(SETTLE_S)
            times[name].append(ms_per_call(steps[name], seconds))
    return times


def eca_layers(fused: Path) -> list[tuple[tuple[int, ...], int, bool]]:
    """(X's shape, k, residual) of every ECA node of a fused model, from ONNX shape inference at batch 1."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(fused)))
    shapes = {v.name: tuple(d.dim_value or 1 for d in v.type.tensor_type.shape.dim) for v in model.graph.value_info}
    layers = []
    for node in model.graph.node:
        if is_eca_node(node):
            weights = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "weights")
            layers.append((shapes[node.input[0]], len(weights), len(node.input) > 1))
    return layers


def layers_model(layers: list[tuple[tuple[int, ...], int, bool]], parts: tuple[str, ...]) -> bytes:
    """One graph holding, for every ECA layer (inputs X<i>, R<i>), the nodes of `parts`: "pool" (a global average
    pool of X), "pass" (Add(X, R) for a residual layer, else Relu(X): one pass reading X and writing Y) or "eca"."""
    nodes, inputs, outputs = [], [], []
    for i, (shape, k, residual) in enumerate(layers):
        x, r = f"X{i}", f"R{i}"
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(shape)) for n in [x, r][: 1 + residual]]
        for part in parts:
            out = f"{part}{i}"
            if part == "pool":
                nodes.append(helper.make_node("GlobalAveragePool", [x], [out]))
            elif part == "pass":
                nodes.append(
                    helper.make_node("Add", [x, r], [out]) if residual else helper.make_node("Relu", [x], [out])
                )
            else:
                activation = "relu" if residual else "none"
                eca = helper.make_node(ECA_OP_TYPE, [x, r][: 1 + residual], [out], domain=ECA_DOMAIN,
                                       weights=[0.1] * k, activation=activation)  # fmt: skip
                nodes.append(eca)
            dims = [*shape[:2], 1, 1] if part == "pool" else list(shape)
            outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, dims))
    graph = helper.make_graph(nodes, "layers", inputs, outputs)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(ECA_DOMAIN, 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


FLOOR_PARTS = {"pool": ("pool",), "pass": ("pass",), "pool + pass (floor)": ("pool", "pass"), "ECA (native)": ("eca",)}


def floor(fused: Path, threads: int, library: Path, rounds: int, seconds: float) -> dict[str, list[float]]:
    """ms per run of one ONNX Runtime graph holding every ECA layer's pool, pass, both, or native ECA node."""
    import onnxruntime as ort

    layers = eca_layers(fused)
    rng = np.random.default_rng(0)
    feed = {}
    for i, (shape, _, residual) in enumerate(layers):
        feed[f"X{i}"] = rng.standard_normal(shape, np.float32)
        if residual:
            feed[f"R{i}"] = rng.standard_normal(shape, np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.register_custom_ops_library(str(library))
    steps = {}
    for name, parts in FLOOR_PARTS.items():
        session = ort.InferenceSession(layers_model(layers, parts), options, providers=["CPUExecutionProvider"])
        steps[name] = lambda session=session: session.run(None, feed)
    return interleaved(steps, rounds, seconds)


def _quartiles(values: list[float], scale: float = 1.0) -> tuple[float, float, float]:
    q1, med, q3 = np.percentile(np.asarray(values) * scale, [25, 50, 75])
    return float(med), float(q1), float(q3)


def _ms(values: list[float]) -> str:
    return "{:.2f} [{:.2f}..{:.2f}]".format(*_quartiles(values))


def _pct(values: list[float]) -> str:
    return "{:+.1f}% [{:+.1f}..{:+.1f}]".format(*_quartiles(values, 100.0))


def ratio_table(rows: list[tuple[str, dict[str, list[float]]]], shown: list[str], title: str,
                pairs: list[tuple[str, str]]) -> None:  # fmt: skip
    """Per round (same round, same load): time / the other variant's time - 1, median [q1..q3]."""
    pairs = [(v, t) for v, t in pairs if v in shown and t in shown]
    if not pairs:
        return
    print(f"\n{title}:\n")
    print("| model | " + " | ".join(v for v, _ in pairs) + " |\n| --- | " + " | ".join("---:" for _ in pairs) + " |")
    for name, times in rows:
        cells = [_pct([a / b - 1 for a, b in zip(times[v], times[t], strict=True)]) if v in times else "-"
                 for v, t in pairs]  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="eca_resnet50,eca_mobilenetv2")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--floor", action="store_true", help="Also time the memory floor on the ECA layers' shapes")
    parser.add_argument("--variants", help="Comma-separated columns to time (default: all): more rounds for fewer")
    args = parser.parse_args()

    from eca_deploy.plugin.onnxruntime_build import find_onnxruntime_op
    from eca_deploy.plugin.openvino_build import find_openvino_extension

    ort_library = find_onnxruntime_op(required=False)
    try:
        ov_extension = find_openvino_extension(required=False)
    except ImportError:
        ov_extension = None
    variants = [*ORT, *OV]
    if args.variants:
        chosen = [v.strip() for v in args.variants.split(",")]
        if unknown := [v for v in chosen if v not in variants]:
            parser.error(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(variants)}")
        variants = [v for v in variants if v in chosen]
    rows, floors, implementations = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            paths = make_models(name, args.img_size, Path(tmp))
            runners = make_runners(paths, args.threads, ort_library, ov_extension, variants)
            x = np.random.default_rng(0).standard_normal((1, 3, args.img_size, args.img_size), np.float32)
            steps = {v: r.make_step({r.inputs[0].name: x}, None) for v, r in runners.items()}
            if "ORT fused (native)" in steps:
                implementations.append((name, runners["ORT fused (native)"].eca_implementation))
            rows.append((name, interleaved(steps, args.rounds, args.seconds)))
            if args.floor and ort_library is not None:
                floors.append((name, floor(paths["fused"], args.threads, ort_library, args.rounds, args.seconds)))
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{cpu_model()} ({os.cpu_count()} cores, load average {[round(v, 1) for v in os.getloadavg()]}), {date}; "
          f"batch 1 at {args.img_size}, f32, {args.threads} threads, {args.rounds} interleaved rounds of "
          f"{args.seconds} s; ms per inference, median [q1..q3]\n")  # fmt: skip
    shown = [v for v in variants if any(v in t for _, t in rows)]
    print("| model | " + " | ".join(shown) + " |\n| --- | " + " | ".join("---:" for _ in shown) + " |")
    for name, times in rows:
        print(f"| {name} | " + " | ".join(_ms(times[v]) if v in times else "-" for v in shown) + " |")
    if implementations:
        print("\nORT fused (native) ran its ECA nodes as: " + ", ".join(f"{m} {i}" for m, i in implementations))
    over_twin = [(v, "ORT twin") for v in ORT[:3]] + [(v, "OV twin") for v in OV[:4]]
    ratio_table(rows, shown, "ECA overhead over the twin (per round: time / twin's time - 1)", over_twin)
    over_unfused = [(v, "ORT unfused") for v in ORT[1:3]] + [(v, "OV unfused") for v in OV[1:3]]
    ratio_table(rows, shown, "The fused model against the unfused one on the same runtime (per round: time / "
                "unfused time - 1; below zero the fused model is faster)", over_unfused)  # fmt: skip
    if floors:
        print("\nThe floor on the ECA layers' shapes (ONNX Runtime, one graph of all ECA layers, ms per run):\n")
        heads = list(FLOOR_PARTS)
        print("| model | " + " | ".join(heads) + " | ECA / floor |\n| --- | " + " | ".join("---:" for _ in heads)
              + " | ---: |")  # fmt: skip
        for name, times in floors:
            ratio = [e / f for e, f in zip(times["ECA (native)"], times["pool + pass (floor)"], strict=True)]
            print(f"| {name} | " + " | ".join(_ms(times[h]) for h in heads) + f" | {_ms(ratio)} |")


if __name__ == "__main__":
    main()

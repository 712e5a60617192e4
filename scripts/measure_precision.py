"""Measure FP16 and INT8 against FP32 on a trained ECA network: the numbers in docs/precision.md.

    python scripts/measure_precision.py [--model NETWORK] [--cache-dir DIR] [--json results.json] [--tools]

Trains a network on scikit-learn's handwritten digits (tests/digits.py; default the zoo's ECA-ResNet-18, about
30 s on 2 cores; `--model timm:ecaresnetlight` or `timm:efficientnet_b0-eca` with timm installed; cached),
then reports held-out accuracy, top-1 agreement with FP32 and the cosine similarity of the logits for:
FP16 (all float16, and with the ECA gate kept in float32); INT8 from eca-deploy's quantizer for each
calibration method, with the ECA gate kept in float (default) and quantized; the fused model. With `--tools`
it adds ONNX Runtime's `quantize_static` and, when importable, NVIDIA ModelOpt's ONNX PTQ on the same
calibration images. Q/DQ models run in ONNX Runtime with graph optimisations off (plain Q/DQ arithmetic, as
TensorRT computes it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner  # noqa: E402
from eca_deploy.fileio import sha256_file  # noqa: E402
from eca_deploy.fusion import fuse_eca  # noqa: E402
from eca_deploy.precision.calibration import load_calibration_set  # noqa: E402
from eca_deploy.precision.fp16 import convert_to_fp16  # noqa: E402
from eca_deploy.precision.qdq import eca_blocks  # noqa: E402
from eca_deploy.precision.quantize import QuantizeOptions, quantize_model  # noqa: E402
from tests import digits  # noqa: E402

CALIB_COUNT = 512


def logits(model: onnx.ModelProto | Path, x: np.ndarray, qdq: bool = False) -> np.ndarray:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return OnnxRuntimeRunner(source, "cpu", optimize=not qdq).run_all(x, 64)["logits"].astype(np.float64)


def row(name: str, out: np.ndarray, ref: np.ndarray, labels: np.ndarray, seconds: float | None = None) -> dict:
    cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    return {
        "variant": name,
        "accuracy": digits.accuracy(out, labels),
        "top1_agreement": float((out.argmax(1) == ref.argmax(1)).mean()),
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "seconds": seconds,
    }


def ort_quantize_static(src: Path, calib: np.ndarray, method: str, exclude_gate: bool, out: Path) -> onnx.ModelProto:
    """ONNX Runtime's own QDQ quantizer with the settings TensorRT needs (symmetric, per-channel, no bias Q)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": calib[i : i + 32]} for i in range(0, len(calib), 32)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    model = onnx.load(str(src))
    gate = [n.name for b in eca_blocks(model) for n in b.nodes] if exclude_gate else []
    ops = ["Conv", "Gemm", "MatMul", "Add", "MaxPool", "GlobalAveragePool"] + ([] if exclude_gate else ["Mul"])
    quantize_static(
        str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=ops, nodes_to_exclude=gate,
        calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy}[method],
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                       "AddQDQPairToWeight": True, "OpTypesToExcludeOutputQuantization": ops},
    )  # fmt: skip
    return onnx.load(str(out))


def modelopt_quantize(src: Path, calib: np.ndarray, method: str, exclude_gate: bool, out: Path) -> onnx.ModelProto:
    import re

    from modelopt.onnx.quantization import quantize

    model = onnx.load(str(src))
    gate = [f"^{re.escape(n.name)}$" for b in eca_blocks(model) for n in b.nodes] if exclude_gate else None
    quantize(
        str(src), quantize_mode="int8", calibration_data=calib, calibration_method=method, output_path=str(out),
        high_precision_dtype="fp32", calibration_eps=["cpu"], nodes_to_exclude=gate, log_level="ERROR",
    )  # fmt: skip
    return onnx.load(str(out))


def per_layer(fp32: onnx.ModelProto, folder: Path, method: str, data: digits.Digits, ref: np.ndarray,
              worst: int = 8) -> list[dict]:  # fmt: skip
    """INT8 one tensor at a time (the rest in float), and the weights alone: which layers cost accuracy."""
    from eca_deploy.precision.calibration import collect_ranges
    from eca_deploy.precision.qdq import QuantPlan, insert_qdq, plan_quantization

    plan = plan_quantization(fp32)
    calib = load_calibration_set(folder, digits.preprocessing(), CALIB_COUNT)
    ranges = collect_ranges(fp32, sorted(plan.activations), calib, method)
    out = []
    weights_only = QuantPlan(weights=dict(plan.weights))
    out.append(row("weights only (per channel)", logits(insert_qdq(fp32, weights_only, {}), data.x_test, qdq=True),
                   ref, data.y_test))  # fmt: skip
    consumers = {i: n for i, n in enumerate(fp32.graph.node)}
    for tensor, uses in plan.activations.items():
        single = QuantPlan()
        single.activations[tensor] = list(uses)
        q = insert_qdq(fp32, single, ranges)
        ops = ",".join(sorted({consumers[i].op_type for i, _ in uses}))
        r = row(f"{tensor} -> {ops} (amax {ranges[tensor]:.3g})", logits(q, data.x_test, qdq=True), ref, data.y_test)
        out.append(r)
    out.sort(key=lambda r: (r["top1_agreement"], r["cosine_mean"]))
    return out[:worst]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=digits.MODEL, choices=digits.NETWORKS, help="network to train")
    kept = os.environ.get("ECA_DEPLOY_TEST_CACHE")  # the folder the tests keep their trained copy in, when set
    default_cache = (Path(kept).expanduser() if kept else ROOT / "build" / "test-cache") / "eca_deploy_digits"
    parser.add_argument("--cache-dir", type=Path, default=default_cache)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--tools", action="store_true", help="compare ONNX Runtime quantize_static and ModelOpt")
    parser.add_argument("--methods", default="percentile,entropy,minmax", help="calibration methods to measure")
    parser.add_argument("--per-layer", metavar="METHOD", help="also list the tensors whose INT8 costs most")
    args = parser.parse_args()

    start = time.perf_counter()
    log: list[str] = []
    src = digits.trained_onnx(args.cache_dir, log, args.model)
    print("\n".join(log) or f"{args.model}: trained copy reused from {args.cache_dir}", file=sys.stderr)
    data = digits.load()
    fp32 = onnx.load(str(src))
    ref = logits(src, data.x_test)
    rows = [row("FP32", ref, ref, data.y_test)]
    gate_nodes = [n.name for b in eca_blocks(fp32) for n in b.nodes if n.op_type != "Mul"]
    rows.append(row("FP16", logits(convert_to_fp16(fp32)[0], data.x_test), ref, data.y_test))
    half_gate = convert_to_fp16(fp32, keep_fp32_nodes=gate_nodes)[0]
    rows.append(row("FP16, ECA gate in FP32", logits(half_gate, data.x_test), ref, data.y_test))

    with tempfile.TemporaryDirectory() as tmp:
        folder = digits.write_pngs(data.raw_train, Path(tmp) / "calib", CALIB_COUNT)
        fused = onnx.ModelProto()
        fused.CopyFrom(fp32)
        fuse_eca(fused)
        sha = sha256_file(src)
        for method in args.methods.split(","):
            for gate in (False, True):
                options = QuantizeOptions(method=method, count=CALIB_COUNT, quantize_eca_gate=gate, use_cache=False)
                start = time.perf_counter()
                q, _ = quantize_model(fp32, folder, sha, options)
                seconds = time.perf_counter() - start
                name = f"INT8 eca-deploy {method}, ECA gate {'INT8' if gate else 'float'}"
                rows.append(row(name, logits(q, data.x_test, qdq=True), ref, data.y_test, seconds))
            q, _ = quantize_model(
                fused, folder, sha, QuantizeOptions(method=method, count=CALIB_COUNT, use_cache=False)
            )
            rows.append(row(f"INT8 eca-deploy {method}, fused ECA nodes", logits(q, data.x_test, qdq=True), ref,
                            data.y_test))  # fmt: skip
        if args.per_layer:
            layers = per_layer(fp32, folder, args.per_layer, data, ref)
            print(f"INT8 one tensor at a time ({args.per_layer}), worst first:", file=sys.stderr)
            for r in layers:
                print(f"  {r['variant']}: accuracy {r['accuracy']:.1%}, agreement {r['top1_agreement']:.1%}, "
                      f"cosine min {r['cosine_min']:.4f}", file=sys.stderr)  # fmt: skip
        if args.tools:
            calib = load_calibration_set(folder, digits.preprocessing(), CALIB_COUNT).array()
            tools = [("ORT quantize_static", ort_quantize_static, ("minmax", "entropy"))]
            try:
                import modelopt.onnx.quantization  # noqa: F401

                tools.append(("ModelOpt", modelopt_quantize, ("max", "entropy")))
            except ImportError:
                print("ModelOpt is not installed: its rows are left out", file=sys.stderr)
            for label, function, methods in tools:
                for method in methods:
                    for exclude in (True, False):
                        start = time.perf_counter()
                        try:
                            q = function(src, calib, method, exclude, Path(tmp) / "tool.onnx")
                        except Exception as exc:  # report and go on: a comparison, not a requirement
                            print(f"{label} {method}: {type(exc).__name__}: {exc}", file=sys.stderr)
                            continue
                        seconds = time.perf_counter() - start
                        name = f"INT8 {label} {method}, ECA gate {'float' if exclude else 'INT8'}"
                        rows.append(row(name, logits(q, data.x_test, qdq=True), ref, data.y_test, seconds))

    print(f"{args.model}: {len(data.y_test)} held-out digits; {CALIB_COUNT} training digits for calibration; "
          f"{time.perf_counter() - start:.0f} s in all\n")  # fmt: skip
    print("| variant | held-out accuracy | top-1 agreement with FP32 | cosine min / mean | time |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        seconds = f"{r['seconds']:.1f} s" if r["seconds"] is not None else ""
        print(f"| {r['variant']} | {r['accuracy']:.1%} | {r['top1_agreement']:.1%} | "
              f"{r['cosine_min']:.4f} / {r['cosine_mean']:.5f} | {seconds} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

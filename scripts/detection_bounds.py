"""Measure the detection verdict on right and wrong-on-purpose detectors (the figures in docs/check_bench.md).

    python scripts/detection_bounds.py OUT_DIR [--size 160] [--images 16]

Builds the test YOLOv8n (tests/detection_scenes.py: ultralytics export, random weights, class scores spread),
its FP16 (`convert --fp16`) and INT8 (`quantize`, 32 calibration canvases) copies, and copies with scores x 0.7
or boxes +3 px appended to the FP32, FP16 and INT8 graphs; checks each against the FP32 export on canvases
and prints one markdown row per artifact.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eca_deploy.backends.handle import ModelSpec, open_model
from eca_deploy.onnx_io import save_onnx
from eca_deploy.pipeline.check import run_check
from eca_deploy.pipeline.quantize import run_quantize
from eca_deploy.precision.fp16 import convert_to_fp16
from tests.detection_scenes import describe_yolov8, scaled_scores, shifted_boxes, write_canvases, yolov8_onnx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args()
    out = args.out
    fp32 = describe_yolov8(yolov8_onnx(out, args.size), args.size)
    images = write_canvases(out / "canvases", args.images, args.size)
    calib = write_canvases(out / "calib", 32, args.size, seed=7)
    fp16, _ = convert_to_fp16(onnx.load(fp32))
    save_onnx(fp16, out / "yolov8n.fp16.onnx")
    run_quantize(fp32, calib, out / "yolov8n.int8.onnx", verify=False)
    artifacts = {"the FP32 export itself": fp32, "convert --fp16": out / "yolov8n.fp16.onnx",
                 "quantize (INT8)": out / "yolov8n.int8.onnx"}  # fmt: skip
    for label, path in list(artifacts.items()):
        model = onnx.load(path)
        for wrong, edit in (("scores x 0.7", scaled_scores), ("boxes +3 px", shifted_boxes)):
            target = out / f"{path.stem}.{wrong.split()[0]}.onnx"
            save_onnx(edit(model), target)
            artifacts[f"{label.split(' (')[0]}, {wrong}"] = target
    print(
        "| candidate | precision | reference detections | F1 | mean IoU | median box offset px | median score bias | "
        "mean score drift | mAP50-95 | verdict |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for label, path in artifacts.items():
        result = run_check(
            open_model(ModelSpec(path, kind="onnx", qdq_arithmetic=True)),
            model_name=None,
            images=images,
            reference_onnx=fp32,
        )
        a = result.detection.agreement
        print(
            f"| {label} | {result.precision} | {a.reference_detections} | {a.f1:.3f} | {a.mean_iou:.3f} | "
            f"{a.box_bias:.2f} | {a.score_bias:+.3f} | {a.mean_score_drift:.3f} | {a.map50_95:.3f} | "
            f"{'PASS' if result.passed else 'FAIL'} |"
        )


if __name__ == "__main__":
    main()

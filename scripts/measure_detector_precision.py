"""FP32, FP16 and INT8 of a trained ECA detector on a digits localisation task: the table in docs/precision.md.

    python scripts/measure_detector_precision.py [--epochs 10] [--json results.json] [--keep DIR]

The task: each of scikit-learn's 8x8 handwritten digits (tests/digits.py: 1,437 for training, 360 held out)
is scaled to 16..32 px and pasted at a random place on a 64x64 canvas of dim noise; the detector must say
which digit it is and where. The network is the example detector (examples/eca_detector.py) at 64x64 with
one 24 px anchor per cell of its 4x4 stride-16 map, trained here from scratch (seeded, AdamW, binary cross-entropy
on the class scores, smooth L1 on the box of the cell holding the digit's centre; about 1 to 3 minutes on 2
cores). It is exported with eca-deploy's exporter, converted with `convert --fp16`'s function and quantized
with `quantize`'s (calibrated on 512 training canvases written as PNG files), and every variant is judged on
720 held-out canvases (two per held-out digit) in ONNX Runtime on the CPU, Q/DQ models with graph
optimisations off (ORT_DISABLE_ALL, plain Q/DQ arithmetic as TensorRT computes it). Per variant: class
accuracy and mean IoU of the best-scoring detection (decoded by the example's `decode`), agreement of the
class with FP32, and the cosine similarity to FP32 of each raw output.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

import eca_detector  # noqa: E402

from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner  # noqa: E402
from eca_deploy.data.images import IMAGENET_MEAN, IMAGENET_STD, Preprocessing  # noqa: E402
from eca_deploy.environment import cpu_model  # noqa: E402
from eca_deploy.exporters import ExportOptions, export_onnx  # noqa: E402
from eca_deploy.fusion import fuse_eca  # noqa: E402
from eca_deploy.onnx_io import save_onnx  # noqa: E402
from eca_deploy.pipeline.convert import convert_model  # noqa: E402
from eca_deploy.precision.quantize import QuantizeOptions, quantize_model  # noqa: E402
from tests import digits  # noqa: E402

CANVAS = 64
SIZES = (16, 32)  # digit side in pixels, inclusive
ANCHOR = 24.0
WIDTHS = (16, 32, 64)  # the example's stages at half width: 64x64 digits need no more
NOISE = 40  # background noise amplitude (0..255)
SEED = 0
CALIB_COUNT = 512
BATCH = 64
TEST_COPIES = 2
TRAIN_COPIES = 2  # fresh canvases per training digit and epoch


@dataclass(frozen=True)
class Canvases:
    images: np.ndarray  # [N, 64, 64, 3] uint8
    labels: np.ndarray  # [N]
    boxes: np.ndarray  # [N, 4] float32 (x1, y1, x2, y2) pixels


def paste(raw: np.ndarray, labels: np.ndarray, copies: int, rng: np.random.Generator) -> Canvases:
    """Each 8x8 digit `copies` times, scaled to 16..32 px (bilinear), at a random place on a noisy canvas."""
    from PIL import Image

    n = len(raw) * copies
    images = rng.integers(0, NOISE, size=(n, CANVAS, CANVAS, 1), dtype=np.uint8).repeat(3, axis=-1)
    boxes = np.empty((n, 4), dtype=np.float32)
    for i in range(n):
        side = int(rng.integers(SIZES[0], SIZES[1] + 1))
        x, y = (int(v) for v in rng.integers(0, CANVAS - side + 1, size=2))
        digit = np.asarray(Image.fromarray(raw[i % len(raw)]).resize((side, side), Image.BILINEAR))
        images[i, y : y + side, x : x + side] = np.maximum(images[i, y : y + side, x : x + side], digit)
        boxes[i] = (x, y, x + side, y + side)
    return Canvases(images, np.tile(labels, copies), boxes)


def preprocessing() -> Preprocessing:
    return Preprocessing.for_size(CANVAS, crop_pct=1.0, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def tensors(c: Canvases) -> np.ndarray:
    prep = preprocessing()
    return np.stack([prep(img) for img in c.images]).astype(np.float32)


def create_model() -> eca_detector.ECADetector:
    torch.manual_seed(SEED)
    return eca_detector.eca_detector(
        num_classes=digits.NUM_CLASSES, img_size=CANVAS, anchor_sizes=(ANCHOR,), widths=WIDTHS, head_width=WIDTHS[-1]
    )


def targets(c: Canvases, stride: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index of the cell holding each digit's centre (row-major), and the box deltas against its anchor."""
    cells = CANVAS // stride
    cx, cy = (c.boxes[:, 0] + c.boxes[:, 2]) / 2, (c.boxes[:, 1] + c.boxes[:, 3]) / 2
    w, h = c.boxes[:, 2] - c.boxes[:, 0], c.boxes[:, 3] - c.boxes[:, 1]
    col, row = np.minimum(cx // stride, cells - 1), np.minimum(cy // stride, cells - 1)
    ax, ay = (col + 0.5) * stride, (row + 0.5) * stride
    deltas = np.stack([(cx - ax) / ANCHOR, (cy - ay) / ANCHOR, np.log(w / ANCHOR), np.log(h / ANCHOR)], axis=1)
    cell = (row * cells + col).astype(np.int64)
    return torch.from_numpy(cell), torch.from_numpy(c.labels.astype(np.int64)), torch.from_numpy(deltas)


def train(model: eca_detector.ECADetector, raw: np.ndarray, labels: np.ndarray, epochs: int) -> nn.Module:
    rng = np.random.default_rng(SEED + 1)
    gen = torch.Generator().manual_seed(SEED)
    steps_per_epoch = math.ceil(len(labels) * TRAIN_COPIES / BATCH)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-3, total_steps=epochs * steps_per_epoch)
    model.train()
    for epoch in range(epochs):
        data = paste(raw, labels, TRAIN_COPIES, rng)
        x = torch.from_numpy(tensors(data))
        cell, label, deltas = targets(data, model.stride)
        order = torch.randperm(len(label), generator=gen)
        total = 0.0
        for start in range(0, len(label), BATCH):
            idx = order[start : start + BATCH]
            cls_flat, box_flat = model(x[idx])  # [n, cells, C], [n, cells, 4]: one anchor per cell
            n = len(idx)
            target = torch.zeros_like(cls_flat)
            target[torch.arange(n), cell[idx], label[idx]] = 1.0
            loss = nn.functional.binary_cross_entropy_with_logits(cls_flat, target, reduction="sum") / n
            pred = box_flat[torch.arange(n), cell[idx]]
            loss = loss + nn.functional.smooth_l1_loss(pred, deltas[idx], beta=0.1, reduction="sum") / n
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * n
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(label):.4f}", file=sys.stderr)
    return model.eval()


def export(model: nn.Module) -> onnx.ModelProto:
    """eca-deploy's exporter (opset 17, dynamic batch); outputs named after the module's `output_names`."""
    with torch.no_grad():
        exported = export_onnx(
            model,
            "examples/eca_detector.py:eca_detector",
            ExportOptions(img_size=CANVAS, preprocessing=preprocessing()),
            weights_source="digits localisation (trained here)",
        )
    names = list(model.output_names)
    current = [o.name for o in exported.graph.output]
    if current != names:  # an exporter that names only the first output "logits": rename in the graph
        rename = dict(zip(current, names, strict=True))
        for node in exported.graph.node:
            node.output[:] = [rename.get(t, t) for t in node.output]
        for value in exported.graph.output:
            value.name = rename[value.name]
    return exported


def run(model: onnx.ModelProto, x: np.ndarray, qdq: bool = False) -> list[np.ndarray]:
    """Every output of `model` on `x`, in ONNX Runtime (CPU); Q/DQ models with graph optimisations off."""
    runner = OnnxRuntimeRunner(model.SerializeToString(), "cpu", optimize=not qdq)
    parts = [runner.infer({runner.inputs[0].name: x[i : i + BATCH]}) for i in range(0, len(x), BATCH)]
    names = [o.name for o in runner.outputs]
    return [np.concatenate([p[name] for p in parts]).astype(np.float64) for name in names]


def best_detections(cls_rows: np.ndarray, box_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class and box of the best-scoring detection per image, with the example's decoder."""
    classes, boxes = np.empty(len(cls_rows), dtype=np.int64), np.empty((len(cls_rows), 4), dtype=np.float32)
    for i in range(len(cls_rows)):
        d = eca_detector.decode(cls_rows[i], box_rows[i], CANVAS, (ANCHOR,), score_threshold=0.0, top_k=1,
                                max_detections=1)  # fmt: skip
        classes[i], boxes[i] = d.classes[0], d.boxes[0]
    return classes, boxes


def cosine_min(out: np.ndarray, ref: np.ndarray) -> float:
    a, b = out.reshape(len(out), -1), ref.reshape(len(ref), -1)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def row(name: str, outputs: list[np.ndarray], ref: list[np.ndarray], test: Canvases, ref_classes: np.ndarray,
        seconds: float | None = None) -> dict:  # fmt: skip
    classes, boxes = best_detections(*outputs)
    iou = np.array([eca_detector.box_iou(boxes[i : i + 1], test.boxes[i : i + 1])[0, 0] for i in range(len(boxes))])
    return {
        "variant": name,
        "class_accuracy": float((classes == test.labels).mean()),
        "mean_iou": float(iou.mean()),
        "iou_at_0.5": float((iou >= 0.5).mean()),
        "class_agreement": float((classes == ref_classes).mean()),
        "cosine_min_cls": cosine_min(outputs[0], ref[0]),
        "cosine_min_box": cosine_min(outputs[1], ref[1]),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on shared cores, more threads spin and run many times slower)",
    )
    parser.add_argument("--methods", default="percentile,entropy,minmax", help="INT8 calibration methods")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--keep", type=Path, help="keep the ONNX files and calibration canvases in this folder")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    data = digits.load()
    start = time.perf_counter()
    model = train(create_model(), data.raw_train, data.y_train, args.epochs)
    train_seconds = time.perf_counter() - start
    fp32 = export(model)
    test = paste(data.raw_test, data.y_test, TEST_COPIES, np.random.default_rng(SEED + 2))
    x = tensors(test)
    with torch.no_grad():
        torch_out = [t.numpy().astype(np.float64) for t in model(torch.from_numpy(x))]
    ref = run(fp32, x)
    ref_classes, _ = best_detections(*ref)
    rows = [row("PyTorch FP32", torch_out, ref, test, ref_classes), row("ONNX FP32", ref, ref, test, ref_classes)]

    fused = onnx.ModelProto()
    fused.CopyFrom(fp32)
    fused_blocks = fuse_eca(fused).count
    half, _ = convert_model(fp32)
    rows.append(row("FP16", run(half, x), ref, test, ref_classes))
    rows.append(row("FP16, fused ECA nodes", run(convert_model(fused)[0], x), ref, test, ref_classes))

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        calib = paste(data.raw_train, data.y_train, 1, np.random.default_rng(SEED + 3))
        digits.write_pngs(calib.images, folder / "calib", CALIB_COUNT)
        for label, model_proto in (("", fp32), (", fused ECA nodes", fused)):
            path = folder / f"det{'.fused' if label else ''}.onnx"
            save_onnx(model_proto, path)
            for method in args.methods.split(","):
                if label and method != "percentile":
                    continue
                options = QuantizeOptions(method=method, count=CALIB_COUNT, use_cache=False)
                t0 = time.perf_counter()
                q, _ = quantize_model(model_proto, folder / "calib", "not-cached", options)
                seconds = time.perf_counter() - t0
                rows.append(row(f"INT8 {method}{label}", run(q, x, qdq=True), ref, test, ref_classes, seconds))
                if args.keep:
                    save_onnx(q, folder / f"det{'.fused' if label else ''}.{method}.int8.onnx")

    print(f"trained {args.epochs} epochs in {train_seconds:.0f} s ({args.threads} threads, {cpu_model()}); "
          f"{fused_blocks} ECA blocks fused; {len(test.labels)} held-out canvases; {CALIB_COUNT} training canvases "
          f"for calibration; {time.perf_counter() - start:.0f} s in all\n")  # fmt: skip
    print("| variant | class accuracy | mean IoU | IoU >= 0.5 | class agreement with FP32 | cosine min cls / box | "
          "quantize time |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        seconds = f"{r['seconds']:.1f} s" if r["seconds"] is not None else ""
        print(
            f"| {r['variant']} | {r['class_accuracy']:.1%} | {r['mean_iou']:.3f} | {r['iou_at_0.5']:.1%} | "
            f"{r['class_agreement']:.1%} | {r['cosine_min_cls']:.4f} / {r['cosine_min_box']:.4f} | {seconds} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"train_seconds": train_seconds, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

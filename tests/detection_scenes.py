"""Test material for detectors: canvases with objects, a small YOLOv8n export, and wrong-on-purpose ONNX copies.

The canvases are made here (seeded): filled rectangles, ellipses and digits in random colours on a noisy
background, so a detector's reference finds objects. A random-weight YOLOv8n finds nothing (its features shrink
layer after layer and its class bias starts at -10); `yolov8_onnx` spreads its class scores over about
0.05..0.95 before export (BatchNorm statistics measured on canvases, the final class convolutions' bias and
weights rescaled), so detections exist and move when the model is wrong. `scaled_scores` and `shifted_boxes` append a Mul / Add to a head output: the wrong models.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper


def canvases(count: int, size: int = 160, seed: int = 0) -> list[np.ndarray]:
    """`count` RGB uint8 canvases (size x size) with 2-5 shapes or digits each."""
    import cv2

    rng = np.random.default_rng(seed)
    found = []
    for _ in range(count):
        img = rng.integers(90, 160, (size, size, 3), dtype=np.uint8)
        img = cv2.GaussianBlur(img, (5, 5), 0)
        for _ in range(int(rng.integers(2, 6))):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            w, h = (int(v) for v in rng.integers(size // 8, size // 2, 2))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            kind = int(rng.integers(0, 3))
            if kind == 0:
                cv2.rectangle(img, (x, y), (x + w, y + h), colour, cv2.FILLED)
            elif kind == 1:
                cv2.ellipse(img, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, colour, cv2.FILLED)
            else:
                text = str(int(rng.integers(0, 10)))
                cv2.putText(img, text, (x, y + h), cv2.FONT_HERSHEY_SIMPLEX, h / 30, colour, max(2, h // 10))
        found.append(img)
    return found


def write_canvases(folder: Path, count: int, size: int = 160, seed: int = 0) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(canvases(count, size, seed)):
        cv2.imwrite(str(folder / f"canvas{i:03d}.png"), img[..., ::-1])
    return folder


def yolov8_onnx(folder: Path, imgsz: int = 160, spread: bool = True) -> Path:
    """YOLOv8n from its YAML (random weights, seeded) exported by ultralytics to `folder`/yolov8n.onnx."""
    import torch

    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    cwd = Path.cwd()
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(folder)
    try:
        torch.manual_seed(0)
        yolo = YOLO("yolov8n.yaml")
        if spread:
            spread_class_scores(yolo.model, imgsz)
        return Path(yolo.export(format="onnx", imgsz=imgsz)).resolve()
    finally:
        os.chdir(cwd)


def spread_class_scores(model: object, imgsz: int, seed: int = 0) -> None:
    """Random-weight class logits spread over about -6..+4, varying from anchor to anchor: BatchNorm running
    statistics measured on 16 canvases (features of unit scale), class conv weights x2, biases in -3..-0.5."""
    import torch

    x = torch.from_numpy(np.stack(canvases(16, imgsz, seed=seed + 100)).astype(np.float32).transpose(0, 3, 1, 2) / 255)
    for m in model.modules():  # type: ignore[attr-defined]
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the batch
    model.train()  # type: ignore[attr-defined]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model(x)  # type: ignore[operator]
        for branch in model.model[-1].cv3:  # type: ignore[attr-defined]
            conv = branch[-1]
            conv.bias.copy_(torch.empty(conv.bias.shape).uniform_(-3.0, -0.5, generator=g))
            conv.weight.mul_(2.0)
    model.eval()  # type: ignore[attr-defined]


def _append(model: onnx.ModelProto, output: str, op: str, values: np.ndarray) -> onnx.ModelProto:
    """A copy of `model` whose output `output` goes through `op` (Mul or Add) with the constant `values`."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    raw = f"{output}_before_{op.lower()}"
    for node in graph.node:
        node.output[:] = [raw if o == output else o for o in node.output]
        node.input[:] = [raw if i == output else i for i in node.input]
    const = f"{output}_{op.lower()}_constant"
    graph.initializer.append(numpy_helper.from_array(values.astype(np.float32), const))
    graph.node.append(helper.make_node(op, [raw, const], [output], name=f"wrong_{op.lower()}_{output}"))
    return out


def _channels(model: onnx.ModelProto, output: str) -> tuple[int, int]:
    dims = next(o for o in model.graph.output if o.name == output).type.tensor_type.shape.dim
    return len(dims), dims[1].dim_value


def scaled_scores(model: onnx.ModelProto, factor: float = 0.7, output: str = "output0") -> onnx.ModelProto:
    """YOLOv8's score channels (4..) times `factor`: what a collapsed INT8 engine looks like."""
    _, channels = _channels(model, output)
    values = np.ones((1, channels, 1))
    values[:, 4:] = factor
    return _append(model, output, "Mul", values)


def shifted_boxes(model: onnx.ModelProto, pixels: float = 3.0, output: str = "output0") -> onnx.ModelProto:
    """YOLOv8's box centres (channels 0, 1) moved by `pixels` right and down."""
    _, channels = _channels(model, output)
    values = np.zeros((1, channels, 1))
    values[:, :2] = pixels
    return _append(model, output, "Add", values)


def describe_yolov8(path: Path, imgsz: int = 160) -> Path:
    """Record eca-deploy metadata in an ultralytics YOLOv8 ONNX (in place): its preprocessing (RGB / 255, no
    mean/std, the whole canvas) and its head (DetectionSpec yolov8 on output0, class names from ultralytics')."""
    import ast

    from eca_deploy.data.images import Preprocessing
    from eca_deploy.exporters.metadata import ModelMetadata, write_metadata
    from eca_deploy.interface import DetectionSpec, OutputSpec

    model = onnx.load(path)
    props = {p.key: p.value for p in model.metadata_props}
    names = ast.literal_eval(props.get("names", "{}"))
    dims = tuple(d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim)
    prep = Preprocessing(size=imgsz, resize=imgsz, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    spec = DetectionSpec("yolov8", ("output0",), tuple(names[i] for i in sorted(names)), (8, 16, 32))
    meta = ModelMetadata("yolov8n", (), 0, prep, model.opset_import[0].version, "ultralytics", "random(seed=0)", {},
                         (OutputSpec("output0", dims, "detection"),), spec)  # fmt: skip
    write_metadata(model, meta)
    onnx.save(model, path)
    return path

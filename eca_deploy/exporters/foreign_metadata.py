"""Descriptions of ONNX files other tools exported, read from the plain metadata_props keys they write.

ultralytics (`yolo export format=onnx`, `YOLO(...).export(format="onnx")`) writes description, author,
version, task, stride, batch, imgsz (a list), names (a Python-literal dict), args, channels and end2end. From
them: the input size, ultralytics' preprocessing (detect/segment/pose/obb: letterbox with grey 114, RGB / 255;
classify: resize and centre crop, RGB / 255), the class names and, for task=detect with the raw head
[N, 4 + classes, anchors] as its first output, the detection layout "yolov8" (YOLOv8/11 heads) with the
strides of its levels. An end-to-end export (end2end=True, NMS or one-to-one boxes inside the graph) has no
raw head: eca-deploy judges its output as a plain tensor and says so (export with end2end=False for the head).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from typing import Any

from eca_deploy.data.images import Preprocessing
from eca_deploy.exporters.model_metadata import ModelMetadata
from eca_deploy.interface import DETECTION, TENSOR, DetectionSpec, OutputSpec

LETTERBOX_TASKS = ("detect", "segment", "pose", "obb")
MAX_LEVELS = 5


def foreign_metadata(props: Mapping[str, str], outputs: Sequence[Any] = ()) -> ModelMetadata | None:
    """A description of a file another tool exported (ultralytics), or None when no known tool wrote it."""
    if is_ultralytics(props):
        return ultralytics_metadata(props, outputs)
    return None


def is_ultralytics(props: Mapping[str, str]) -> bool:
    return props.get("author", "").startswith("Ultralytics") and "imgsz" in props and "task" in props


def _literal(text: str | None, default: Any) -> Any:
    try:
        return ast.literal_eval(text) if text else default
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return default


def ultralytics_size(props: Mapping[str, str]) -> tuple[int, int] | None:
    """(H, W) from `imgsz` ("[640, 640]" or "640"), or None when unreadable."""
    value = _literal(props.get("imgsz"), None)
    if isinstance(value, int):
        value = [value, value]
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return int(value[0]), int(value[1])
    return None


def ultralytics_names(props: Mapping[str, str]) -> tuple[str, ...]:
    """Class names in index order from `names` ("{0: 'person', ...}"); empty when unreadable or not 0..n-1."""
    value = _literal(props.get("names"), {})
    if not isinstance(value, dict) or sorted(value) != list(range(len(value))):
        return ()
    return tuple(str(value[i]) for i in range(len(value)))


def level_strides(stride: int, hw: tuple[int, int], anchors: int | None) -> tuple[int, ...]:
    """The strides of a head's levels, largest `stride` halved per level, that give `anchors` anchor points at
    `hw` (YOLOv8n at 640: 8, 16, 32 -> 8400); the usual three levels when `anchors` is unknown; () if none fit."""
    h, w = hw
    for count in (3, *(n for n in range(1, MAX_LEVELS + 1) if n != 3)):
        strides = tuple(stride >> (count - 1 - i) for i in range(count))
        if any(s <= 0 or stride % s for s in strides):
            continue
        points = sum(-(-h // s) * -(-w // s) for s in strides)
        if anchors is None or points == anchors:
            return strides
    return ()


def ultralytics_metadata(props: Mapping[str, str], outputs: Sequence[Any] = ()) -> ModelMetadata | None:
    """ModelMetadata of an ultralytics ONNX export; None when its imgsz cannot be read."""
    hw = ultralytics_size(props)
    if hw is None:
        return None
    task = props.get("task", "")
    names = ultralytics_names(props)
    if task in LETTERBOX_TASKS:
        prep = Preprocessing.yolo(hw[0], hw[1])
    else:  # classify: torchvision Resize (shorter side) + CenterCrop at imgsz, ToTensor, mean 0 std 1
        prep = Preprocessing(size=hw[0], resize=hw[0], mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        prep = prep.at_hw(hw) if hw[0] != hw[1] else prep
    specs, detection, notes = _detect_head(props, task, hw, names, outputs)
    description = props.get("description", "").strip().removeprefix("Ultralytics ").removesuffix(" model").strip()
    version = props.get("version", "")
    return ModelMetadata(
        model=f"onnx:ultralytics-{description or task or 'model'}",  # made elsewhere: never rebuilt
        k_sizes=(),
        num_classes=len(names),
        preprocessing=prep,
        opset=0,
        exporter=f"ultralytics {version}".strip(),
        weights="the weights ultralytics exported",
        versions={"ultralytics": version} if version else {},
        outputs=specs,
        detection=detection,
        notes=notes,
    )


def _detect_head(
    props: Mapping[str, str], task: str, hw: tuple[int, int], names: tuple[str, ...], outputs: Sequence[Any]
) -> tuple[tuple[OutputSpec, ...], DetectionSpec | None, tuple[str, ...]]:
    """The raw YOLOv8/11 detection head, when the first output has the shape [N, 4 + classes, anchors]."""
    if task != "detect" or not outputs:
        return (), None, ()
    first = outputs[0]
    shape = tuple(first.shape)
    if props.get("end2end", "False").strip().lower() == "true":
        note = (
            f"{first.name} is an end-to-end ultralytics export (boxes after NMS, shape {list(shape)}): "
            "eca-deploy judges raw heads, so it is compared as a plain tensor; export with end2end=False "
            "for the raw head"
        )
        return (OutputSpec(first.name, shape, TENSOR),), None, (note,)
    channels = shape[1] if len(shape) == 3 else None
    if not names or channels != 4 + len(names):
        note = (
            f"{first.name} has shape {list(shape)}, not the [N, 4 + {len(names)} classes, anchors] of a YOLOv8/11 "
            "head: compared as a plain tensor, no boxes decoded"
        )
        return (OutputSpec(first.name, shape, TENSOR),), None, (note,)
    anchors = shape[2] if isinstance(shape[2], int) and shape[2] > 0 else None
    strides = level_strides(int(_literal(props.get("stride"), 32) or 32), hw, anchors)
    spec = DetectionSpec("yolov8", (first.name,), names, strides)
    return (OutputSpec(first.name, shape, DETECTION),), spec, ()

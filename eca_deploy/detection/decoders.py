"""Raw detection heads -> `Detections`: one decoder per layout of `eca_deploy.interface.DETECTION_LAYOUTS`.

Each layout's decoder turns one batch of raw outputs into per-anchor class scores in 0..1 [N, L, C] and
boxes (x1, y1, x2, y2) in input pixels [N, L, 4]; `select` then keeps, per image, each anchor's best class
above the score threshold, the `top_k` best of them, class-aware NMS, at most `max_detections`:

- yolov8: [N, 4 + C, A], (cx, cy, w, h) pixels and sigmoid scores (ultralytics' export);
- yolov5: [N, A, 5 + C], (cx, cy, w, h) pixels, objectness and class scores; score = objectness x class;
- eca_detector: the example's cls [N, L, C] logits and box [N, L, 4] (dx, dy, dw, dh) against square anchors
  of 32, 64, 128 px at stride 16 (examples/eca_detector.py);
- retinanet: torchvision's cls_logits [N, L, C] and bbox_regression [N, L, 4] (BoxCoder weights 1 against
  AnchorGenerator's 9 anchors per location on P3-P7);
- fcos: torchvision's cls_logits, bbox_regression (l, t, r, b in units of the anchor's size) and bbox_ctrness
  [N, L, 1]; score = sqrt(sigmoid(cls) x sigmoid(ctrness)), as torchvision's FCOS.

Judging defaults (`JUDGE`): ultralytics' predict defaults for the detections a user sees (score >= 0.25,
NMS IoU 0.7, at most 300 per image); `RANKED` keeps scores down to 0.001 as ultralytics' `val` does, for
the candidate's ranked list in mAP.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from eca_deploy.detection.boxes import Detections, class_nms, xywh_to_xyxy
from eca_deploy.errors import EcaDeployError
from eca_deploy.interface import DetectionSpec

BOX_CLAMP = math.log(1000.0 / 16)  # largest dw, dh before exp (torchvision's BoxCoder bound)
EXAMPLE_ANCHORS = (32.0, 64.0, 128.0)
EXAMPLE_STRIDE = 16
RETINANET_SIZES = tuple((x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x in (32, 64, 128, 256, 512))
RETINANET_RATIOS = (0.5, 1.0, 2.0)
FPN_STRIDES = (8, 16, 32, 64, 128)


@dataclass(frozen=True)
class DecodeOptions:
    """Which decoded boxes count: score threshold, NMS IoU, candidates before NMS, detections kept per image."""

    score_threshold: float = 0.25
    iou_threshold: float = 0.7
    top_k: int = 1000
    max_detections: int = 300
    multi_label: bool = False  # every class above the threshold per anchor (torchvision), else its best (ultralytics)


JUDGE = DecodeOptions()
RANKED = replace(JUDGE, score_threshold=0.001)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def select(scores: np.ndarray, boxes: np.ndarray, options: DecodeOptions = JUDGE) -> Detections:
    """One image's per-anchor scores [L, C] (0..1) and boxes [L, 4] (xyxy) -> its detections, best first."""
    scores = np.asarray(scores, np.float64)
    if options.multi_label:
        flat = scores.ravel()
        found = np.flatnonzero(flat >= options.score_threshold)
        found = found[np.argsort(-flat[found], kind="stable")[: options.top_k]]
        rows, classes = np.divmod(found, scores.shape[1])
        kept_scores = flat[found]
    else:
        classes_all = scores.argmax(axis=1)
        best = scores[np.arange(len(scores)), classes_all]
        rows = np.flatnonzero(best >= options.score_threshold)
        rows = rows[np.argsort(-best[rows], kind="stable")[: options.top_k]]
        classes, kept_scores = classes_all[rows], best[rows]
    chosen = np.asarray(boxes, np.float64)[rows]
    keep = class_nms(chosen, kept_scores, classes, options.iou_threshold)[: options.max_detections]
    return Detections(
        chosen[keep].astype(np.float32), kept_scores[keep].astype(np.float32), classes[keep].astype(np.int64)
    )


# -- per-layout raw decoding: batched outputs -> (scores [N, L, C], boxes [N, L, 4]) ------------------------


def _yolov8(outputs: Sequence[np.ndarray], size: tuple[int, int], spec: DetectionSpec) -> tuple[np.ndarray, ...]:
    (head,) = outputs
    if head.ndim != 3 or head.shape[1] < 5:
        raise EcaDeployError(f"a yolov8 head is [N, 4 + classes, anchors], got {list(head.shape)}")
    rows = np.asarray(head, np.float64).transpose(0, 2, 1)
    return rows[..., 4:], xywh_to_xyxy(rows[..., :4])


def _yolov5(outputs: Sequence[np.ndarray], size: tuple[int, int], spec: DetectionSpec) -> tuple[np.ndarray, ...]:
    (head,) = outputs
    if head.ndim != 3 or head.shape[2] < 6:
        raise EcaDeployError(f"a yolov5 head is [N, anchors, 5 + classes], got {list(head.shape)}")
    rows = np.asarray(head, np.float64)
    return rows[..., 4:5] * rows[..., 5:], xywh_to_xyxy(rows[..., :4])


def example_anchors(height: int, width: int, stride: int, sizes: Sequence[float]) -> np.ndarray:
    """[H' W' A, 4] square anchors (cx, cy, w, h) centred on each cell of the stride-`stride` map, rows (i, j, a)."""
    h, w = math.ceil(height / stride), math.ceil(width / stride)
    cy, cx = np.meshgrid((np.arange(h) + 0.5) * stride, (np.arange(w) + 0.5) * stride, indexing="ij")
    out = np.empty((h, w, len(sizes), 4), dtype=np.float64)
    out[..., 0], out[..., 1] = cx[..., None], cy[..., None]
    out[..., 2], out[..., 3] = np.asarray(sizes, np.float64), np.asarray(sizes, np.float64)
    return out.reshape(-1, 4)


def delta_boxes(deltas: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """(dx, dy, dw, dh) against priors (cx, cy, w, h) -> (x1, y1, x2, y2), torchvision's BoxCoder (weights 1)."""
    deltas = np.asarray(deltas, np.float64)
    cx = priors[..., 0] + deltas[..., 0] * priors[..., 2]
    cy = priors[..., 1] + deltas[..., 1] * priors[..., 3]
    w = priors[..., 2] * np.exp(np.minimum(deltas[..., 2], BOX_CLAMP))
    h = priors[..., 3] * np.exp(np.minimum(deltas[..., 3], BOX_CLAMP))
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def _rows_check(layout: str, rows: int, priors: np.ndarray, size: tuple[int, int]) -> None:
    if rows != len(priors):
        raise EcaDeployError(
            f"the {layout} head has {rows} rows but a {size[0]}x{size[1]} input gives {len(priors)} anchors: "
            "check the layout (--layout) and the input size"
        )


def _eca_detector(outputs: Sequence[np.ndarray], size: tuple[int, int], spec: DetectionSpec) -> tuple[np.ndarray, ...]:
    cls, box = outputs
    stride = spec.strides[0] if spec.strides else EXAMPLE_STRIDE
    cells = math.ceil(size[0] / stride) * math.ceil(size[1] / stride)
    count = cls.shape[1] // cells if cells else 0
    sizes = EXAMPLE_ANCHORS if count == len(EXAMPLE_ANCHORS) else tuple(32.0 * 2**i for i in range(max(count, 1)))
    priors = example_anchors(size[0], size[1], stride, sizes)
    _rows_check("eca_detector", cls.shape[1], priors, size)
    return sigmoid(cls), delta_boxes(box, priors)


def level_sizes(height: int, width: int, strides: Sequence[int]) -> list[tuple[int, int]]:
    """Feature map sizes of an FPN level at each nominal stride: ResNet + FPN halve with ceil at every step."""
    return [(math.ceil(height / s), math.ceil(width / s)) for s in strides]


def torchvision_anchors(
    height: int,
    width: int,
    sizes: Sequence[Sequence[int]],
    ratios: Sequence[float],
    strides: Sequence[int] = FPN_STRIDES,
) -> np.ndarray:
    """[L, 4] anchors (cx, cy, w, h) as torchvision's AnchorGenerator lays them out (level, location, anchor)."""
    levels = []
    for (h, w), level_sizes_ in zip(level_sizes(height, width, strides), sizes, strict=True):
        sy, sx = height // h, width // w  # torchvision's stride: image size // feature size
        scales = np.asarray(level_sizes_, np.float64)
        hr = np.sqrt(np.asarray(ratios, np.float64))
        ws = ((1 / hr)[:, None] * scales[None, :]).ravel()
        hs = (hr[:, None] * scales[None, :]).ravel()
        base = np.round(np.stack([-ws, -hs, ws, hs], axis=1) / 2)
        yy, xx = np.meshgrid(np.arange(h) * sy, np.arange(w) * sx, indexing="ij")
        shifts = np.stack([xx.ravel(), yy.ravel(), xx.ravel(), yy.ravel()], axis=1).astype(np.float64)
        corners = (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)
        levels.append(np.concatenate([(corners[:, :2] + corners[:, 2:]) / 2, corners[:, 2:] - corners[:, :2]], 1))
    return np.concatenate(levels)


def _strides(spec: DetectionSpec) -> tuple[int, ...]:
    return spec.strides or FPN_STRIDES


def _retinanet(outputs: Sequence[np.ndarray], size: tuple[int, int], spec: DetectionSpec) -> tuple[np.ndarray, ...]:
    cls, box = outputs
    priors = torchvision_anchors(*size, RETINANET_SIZES[: len(_strides(spec))], RETINANET_RATIOS, _strides(spec))
    _rows_check("retinanet", cls.shape[1], priors, size)
    return sigmoid(cls), delta_boxes(box, priors)


def _fcos(outputs: Sequence[np.ndarray], size: tuple[int, int], spec: DetectionSpec) -> tuple[np.ndarray, ...]:
    cls, box, ctr = outputs
    strides = _strides(spec)
    priors = torchvision_anchors(*size, [(s,) for s in strides], (1.0,), strides)
    _rows_check("fcos", cls.shape[1], priors, size)
    rel = np.asarray(box, np.float64)
    cx, cy, w, h = (priors[..., i] for i in range(4))
    boxes = np.stack([cx - rel[..., 0] * w, cy - rel[..., 1] * h, cx + rel[..., 2] * w, cy + rel[..., 3] * h], -1)
    return np.sqrt(sigmoid(cls) * sigmoid(ctr)), boxes


RawDecoder = Callable[[Sequence[np.ndarray], tuple[int, int], DetectionSpec], tuple[np.ndarray, ...]]
DECODERS: dict[str, RawDecoder] = {
    "yolov8": _yolov8,
    "yolov5": _yolov5,
    "eca_detector": _eca_detector,
    "retinanet": _retinanet,
    "fcos": _fcos,
}
OUTPUT_COUNT = {"yolov8": 1, "yolov5": 1, "eca_detector": 2, "retinanet": 2, "fcos": 3}
MULTI_LABEL = {"retinanet": True, "fcos": True, "eca_detector": True}  # sigmoid-per-class heads, as torchvision


def spec_for(layout: str, output_names: Sequence[str], names: Sequence[str] = ()) -> DetectionSpec:
    """A `DetectionSpec` for `--layout NAME`: the model's first outputs, as many as the layout reads."""
    if layout not in DECODERS:
        raise EcaDeployError(f"unknown --layout {layout!r}: choose one of {', '.join(DECODERS)}")
    count = OUTPUT_COUNT[layout]
    if len(output_names) < count:
        raise EcaDeployError(f"--layout {layout} reads {count} outputs, the model has {len(output_names)}")
    return DetectionSpec(layout, tuple(output_names[:count]), tuple(names))


def decode(
    spec: DetectionSpec,
    outputs: Mapping[str, np.ndarray],
    image_size: tuple[int, int],
    options: DecodeOptions = JUDGE,
) -> list[Detections]:
    """Batched raw outputs (by name) of a model with head `spec` at input `image_size` (H, W) -> per image."""
    missing = [o for o in spec.outputs if o not in outputs]
    if missing:
        raise EcaDeployError(f"the {spec.layout} head reads outputs {', '.join(missing)}, which the model lacks")
    scores, boxes = DECODERS[spec.layout]([outputs[o] for o in spec.outputs], tuple(image_size), spec)
    if MULTI_LABEL.get(spec.layout) and not options.multi_label:
        options = replace(options, multi_label=True)
    return [select(s, b, options) for s, b in zip(scores, boxes, strict=True)]

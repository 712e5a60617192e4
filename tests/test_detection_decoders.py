"""The built-in decoders: YOLO layouts on hand-made tensors, torchvision's heads against torchvision's own
anchors and box coders, and the example detector's layout against the example's decode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eca_deploy.detection.decoders import RANKED, DecodeOptions, decode, spec_for
from eca_deploy.errors import EcaDeployError
from eca_deploy.interface import DetectionSpec


def test_yolov8_rows_are_anchors_with_centre_size_boxes_and_scores() -> None:
    head = np.zeros((1, 4 + 3, 4), np.float32)  # 3 classes, 4 anchors
    head[0, :4, 0] = [50, 40, 20, 10]  # cx, cy, w, h
    head[0, 4:, 0] = [0.1, 0.8, 0.3]
    head[0, :4, 1] = [51, 40, 20, 10]  # overlaps anchor 0 (IoU 0.9), same class, lower score: suppressed
    head[0, 4:, 1] = [0.0, 0.6, 0.0]
    head[0, :4, 2] = [10, 10, 8, 8]
    head[0, 4:, 2] = [0.2, 0.0, 0.0]  # below 0.25: dropped
    head[0, :4, 3] = [50, 40, 20, 10]
    head[0, 4:, 3] = [0.0, 0.0, 0.5]  # same box, other class: kept
    (found,) = decode(DetectionSpec("yolov8", ("output0",)), {"output0": head}, (64, 96))
    assert found.classes.tolist() == [1, 2]
    np.testing.assert_allclose(found.boxes[0], [40, 35, 60, 45])
    np.testing.assert_allclose(found.scores, [0.8, 0.5], rtol=1e-6)


def test_yolov5_score_is_objectness_times_class() -> None:
    rows = np.zeros((1, 2, 5 + 2), np.float32)
    rows[0, 0] = [20, 20, 10, 10, 0.5, 0.9, 0.1]  # 0.45 for class 0
    rows[0, 1] = [60, 60, 10, 10, 0.2, 0.1, 0.9]  # 0.18: below 0.25
    (found,) = decode(DetectionSpec("yolov5", ("output0",)), {"output0": rows}, (80, 80))
    assert found.classes.tolist() == [0] and found.scores == pytest.approx([0.45])
    assert len(decode(DetectionSpec("yolov5", ("output0",)), {"output0": rows}, (80, 80), RANKED)[0]) == 2


def test_a_head_that_does_not_fit_its_layout_is_one_line() -> None:
    with pytest.raises(EcaDeployError, match=r"a yolov8 head is \[N, 4 \+ classes, anchors\]"):
        decode(DetectionSpec("yolov8", ("output0",)), {"output0": np.zeros((1, 3, 10))}, (32, 32))
    with pytest.raises(EcaDeployError, match="--layout retinanet reads 2 outputs"):
        spec_for("retinanet", ["only"])


@pytest.mark.parametrize("kind", ["retinanet", "fcos"])
def test_torchvision_heads_decode_as_torchvision_does(kind: str) -> None:
    """Our anchors equal torchvision's AnchorGenerator's, our boxes its box coder's, at a non-square size."""
    pytest.importorskip("torchvision")
    from eca_deploy.detection import decoders
    from eca_deploy.models.torchvision_detection import RawDetector, anchor_boxes, eca_fcos, eca_retinanet

    build = eca_retinanet if kind == "retinanet" else eca_fcos
    detector = build(num_classes=3, backbone="eca_resnet18", fpn_channels=32)
    raw = RawDetector(detector)
    height, width = 96, 160
    torch.manual_seed(0)
    with torch.no_grad():
        outputs = [o.numpy() for o in raw(torch.randn(1, 3, height, width))]
    theirs = anchor_boxes(raw, height, width)
    spec = spec_for(kind, list(raw.output_names))
    scores, boxes = decoders.DECODERS[kind](outputs, (height, width), spec)
    assert boxes.shape[1] == len(theirs) == outputs[0].shape[1]
    with torch.no_grad():
        coder = detector.box_coder  # RetinaNet: BoxCoder.decode_single; FCOS: BoxLinearCoder.decode
        expected = getattr(coder, "decode_single", coder.decode)(torch.from_numpy(outputs[1][0]), theirs)
    np.testing.assert_allclose(boxes[0], expected.numpy(), rtol=1e-4, atol=1e-3)
    logits = 1 / (1 + np.exp(-outputs[0][0].astype(np.float64)))
    if kind == "fcos":
        logits = np.sqrt(logits / (1 + np.exp(-outputs[2][0].astype(np.float64))))
    np.testing.assert_allclose(scores[0], logits, rtol=1e-6)
    found = decode(spec, dict(zip(raw.output_names, outputs, strict=True)), (height, width), RANKED)
    assert len(found) == 1 and len(found[0]) > 0


def test_eca_detector_layout_equals_the_example_decode() -> None:
    from tests.test_detector_example import det

    rng = np.random.default_rng(0)
    size, classes = 64, 3
    rows = (size // 16) ** 2 * 3
    cls = rng.normal(-1.0, 2.0, (1, rows, classes)).astype(np.float32)
    box = rng.normal(0.0, 0.2, (1, rows, 4)).astype(np.float32)
    options = DecodeOptions(score_threshold=0.3, iou_threshold=0.5, max_detections=100, multi_label=True)
    (ours,) = decode(spec_for("eca_detector", ["cls", "box"]), {"cls": cls, "box": box}, (size, size), options)
    example = det.decode(cls[0], box[0], size)
    assert len(ours) == len(example) > 0
    np.testing.assert_allclose(ours.boxes, example.boxes, rtol=1e-5)
    assert ours.classes.tolist() == example.classes.tolist()

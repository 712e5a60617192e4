"""Tensor checks that cannot hide a part (per channel group), and INT8 that keeps a head's decoding in float."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from eca_deploy.interface import DetectionSpec
from eca_deploy.metrics import channel_groups, compare_outputs
from eca_deploy.pipeline.check import DEFAULT_TOLERANCES


def _yolo_like(rng: np.random.Generator, images: int = 4, classes: int = 10, anchors: int = 300) -> np.ndarray:
    head = np.empty((images, 4 + classes, anchors), np.float32)
    head[:, :4] = rng.uniform(0, 480, (images, 4, anchors))  # pixels
    head[:, 4:] = rng.uniform(0.05, 0.95, (images, classes, anchors))  # scores
    return head


def _scaled(head: np.ndarray, factor: float = 0.7) -> np.ndarray:
    out = head.copy()
    out[:, 4:] *= factor
    return out


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("described", [True, False])
def test_a_score_error_of_0_29_fails_every_precision(precision: str, described: bool) -> None:
    """Scores x 0.7 next to box pixels: the whole-tensor cosine stays > 0.999, the score group fails."""
    ref = _yolo_like(np.random.default_rng(0))
    out = _scaled(ref)
    spec = DetectionSpec("yolov8", ("output0",)) if described else None  # plain [N, 14, 300]: per channel
    checks = compare_outputs({"output0": ref}, {"output0": out}, {"output0": "tensor"}, DEFAULT_TOLERANCES[precision],
                             spec)  # fmt: skip
    check = checks["output0"]
    assert check.agreement.cosine_min > 0.99  # what used to pass it
    assert not check.passed
    assert any("on scores" in f or "on channel" in f for f in check.failures), check.failures


def test_a_small_score_error_passes_int8_and_a_box_error_is_judged_in_pixels() -> None:
    rng = np.random.default_rng(1)
    ref = _yolo_like(rng)
    out = ref.copy()
    out[:, 4:] += rng.normal(0, 0.01, out[:, 4:].shape).astype(np.float32)
    out[:, :4] += rng.normal(0, 2.0, out[:, :4].shape).astype(np.float32)  # 2 px noise: 0.4% of 480 px
    checks = compare_outputs({"o": ref}, {"o": out}, {"o": "tensor"}, DEFAULT_TOLERANCES["int8"],
                             DetectionSpec("yolov8", ("o",)))  # fmt: skip
    assert checks["o"].passed, checks["o"].failures
    assert [g.name for g in checks["o"].agreement.groups] == ["box", "scores"]


def test_channel_groups_rule() -> None:
    assert channel_groups((1, 84, 2100))[0] == 1 and len(channel_groups((1, 84, 2100))[1]) == 84
    assert channel_groups((1, 1200, 4))[0] == 2  # rows of fields: the small last axis
    assert channel_groups((1, 64, 20, 20)) == (0, [("all", 0, 0)])  # feature maps: one group, as before
    yolov5 = (2, (("box", 0, 4), ("objectness", 4, 5), ("scores", 5, None)))
    assert channel_groups((1, 25200, 85), yolov5) == (2, [("box", 0, 4), ("objectness", 4, 5), ("scores", 5, 85)])


def test_logits_are_judged_as_before() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(0, 5, (8, 100)).astype(np.float32)
    out = ref + rng.normal(0, 0.5, ref.shape).astype(np.float32)
    check = compare_outputs({"logits": ref}, {"logits": out}, {"logits": "logits"}, DEFAULT_TOLERANCES["int8"])
    assert check["logits"].agreement.groups == ()  # no channel groups, no max-abs bound at INT8
    assert not any("max abs" in f for f in check["logits"].failures)


def test_int8_keeps_the_yolov8_decoding_in_float(tmp_path: Path) -> None:
    from eca_deploy.precision.qdq import decoding_nodes, plan_quantization
    from tests.detection_scenes import yolov8_onnx

    model = onnx.load(yolov8_onnx(tmp_path, 64, spread=False))
    tail = {model.graph.node[i].name for i in decoding_nodes(model)}
    for name in ("/model.22/dfl/Softmax", "/model.22/dfl/conv/Conv", "/model.22/Add_2", "/model.22/Sigmoid",
                 "/model.22/Mul_2", "/model.22/Concat_3"):  # fmt: skip
        assert name in tail, name
    assert not any(n.startswith("/model.22/cv2.0/cv2.0.2") or n.startswith("/model.22/cv3") for n in tail)
    plan = plan_quantization(model)
    quantized_nodes = {model.graph.node[i].name for uses in plan.activations.values() for i, _ in uses}
    quantized_nodes |= {model.graph.node[i].name for i, _ in plan.weights}
    assert "/model.22/dfl/conv/Conv" not in quantized_nodes and "/model.22/Add_2" not in quantized_nodes
    assert "/model.22/cv3.0/cv3.0.2/Conv" in quantized_nodes  # the head's last learned convolutions run in INT8
    assert plan.decoding_nodes > 10


def test_a_classifier_quantization_plan_is_unchanged() -> None:
    import torch

    from eca_deploy.exporters import ExportOptions, export_onnx
    from eca_deploy.models.registry import create_model
    from eca_deploy.precision.qdq import decoding_nodes

    torch.manual_seed(0)
    model = create_model("eca_resnet18", num_classes=10).eval()
    with torch.no_grad():
        onnx_model = export_onnx(model, "eca_resnet18", ExportOptions(img_size=32))
    assert decoding_nodes(onnx_model) == set()  # the logits come straight from the Gemm

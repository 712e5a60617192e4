"""check judges a detector by its detections: wrong-on-purpose detectors fail at every precision, naming the
output and what disagrees; correct conversions pass; a reference that finds nothing is said aloud.

Models: a real ultralytics YOLOv8n export (random weights, class scores spread, tests/detection_scenes.py) and
the example detector; the wrong copies append a Mul (scores x 0.7) or an Add (boxes +3 px) to the ONNX graph.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from eca_deploy.backends.handle import ModelSpec, open_model
from eca_deploy.pipeline.check import DEFAULT_TOLERANCES, run_check
from tests.conftest import assert_one_line_error
from tests.detection_scenes import (
    describe_yolov8,
    scaled_confidences,
    scaled_scores,
    shifted_boxes,
    shifted_deltas,
    write_canvases,
    yolov8_onnx,
)

PRECISIONS = ("fp32", "fp16", "int8")


@pytest.fixture(scope="module")
def yolo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("yolo")
    path = describe_yolov8(yolov8_onnx(folder, 160), 160)
    model = onnx.load(path)
    files = {"fp32": path, "images": write_canvases(folder / "canvases", 8)}
    for name, wrong in (("scaled", scaled_scores(model)), ("shifted", shifted_boxes(model))):
        files[name] = folder / f"yolov8n.{name}.onnx"
        onnx.save(wrong, files[name])
    return files


def _check(files: dict[str, Path], name: str, precision: str | None = None, **kwargs):
    target = open_model(ModelSpec(files[name], kind="onnx", qdq_arithmetic=True))
    if precision is not None:  # judge the model as if it were an engine of this precision
        target = replace(target, precision=precision)
    tolerance = DEFAULT_TOLERANCES[target.precision]
    return run_check(target, model_name=None, images=files["images"], reference_onnx=files["fp32"],
                     tolerance=tolerance, **kwargs)  # fmt: skip


def test_the_same_detector_passes_with_detections_measured(yolo: dict[str, Path]) -> None:
    result = _check(yolo, "fp32")
    assert result.passed, result.failures
    a = result.detection.agreement
    assert result.detection.measured and a.reference_detections >= 8
    assert a.f1 == 1.0 and a.mean_iou == pytest.approx(1.0) and a.max_score_drift == 0.0
    assert result.as_dict()["detection"]["layout"] == "yolov8"


@pytest.mark.parametrize("precision", PRECISIONS)
def test_scores_times_0_7_fail_at_every_precision(yolo: dict[str, Path], precision: str) -> None:
    result = _check(yolo, "scaled", precision)
    assert not result.passed
    text = "; ".join(result.failures)
    assert "detections (yolov8: output0)" in text and "scores lower by" in text, text
    assert result.as_dict()["failed_outputs"] == ["output0"]
    # the tensor check alone, per channel group, fails too: a 0.3 error on 0..1 scores
    advisory = result.checks["output0"].advisory
    assert any("on scores, channels 4-83" in f for f in advisory), advisory


@pytest.mark.parametrize("precision", PRECISIONS)
def test_boxes_shifted_3px_fail_at_every_precision(yolo: dict[str, Path], precision: str) -> None:
    result = _check(yolo, "shifted", precision)
    assert not result.passed
    text = "; ".join(result.failures)
    assert "output0" in text and "boxes offset by 3.00 px" in text, text


def test_a_correct_fp16_conversion_passes_and_a_wrong_one_fails(yolo: dict[str, Path], tmp_path: Path) -> None:
    from eca_deploy.onnx_io import save_onnx
    from eca_deploy.precision.fp16 import convert_to_fp16

    fp16, _ = convert_to_fp16(onnx.load(yolo["fp32"]))
    files = {**yolo, "fp16": tmp_path / "yolov8n.fp16.onnx", "fp16wrong": tmp_path / "yolov8n.fp16wrong.onnx"}
    save_onnx(fp16, files["fp16"])
    save_onnx(scaled_scores(fp16), files["fp16wrong"])
    good = _check(files, "fp16")
    assert good.precision == "fp16" and good.passed, good.failures
    assert good.detection.agreement.f1 > 0.95
    bad = _check(files, "fp16wrong")
    assert not bad.passed and "scores lower by" in "; ".join(bad.failures)


def test_cli_names_the_output_and_what_disagrees(cli, yolo: dict[str, Path]) -> None:
    result = cli("check", "--onnx", str(yolo["shifted"]), "--reference-onnx", str(yolo["fp32"]),
                 "--images", str(yolo["images"]), "--json", "-")  # fmt: skip
    assert result.code == 1
    import json

    report = json.loads(result.stdout)
    assert report["failed_outputs"] == ["output0"] and report["detection"]["measured"]
    assert report["detection"]["agreement"]["box_bias"] == pytest.approx(3.0, abs=0.05)
    assert "output0" in result.stderr and "boxes offset by" in result.stderr


def test_layout_option_is_checked_before_any_work(cli, yolo: dict[str, Path]) -> None:
    result = cli("check", "--onnx", str(yolo["fp32"]), "--layout", "yolov99")
    assert result.code == 2
    assert_one_line_error(result, "--layout must be one of yolov8, yolov5")


# -- the example detector ------------------------------------------------------------------------------------

SIZE = 64
ANCHORS = (32.0, 64.0, 128.0)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch

    import eca_deploy
    from tests.test_detector_example import det

    folder = tmp_path_factory.mktemp("example")
    files = {"images": write_canvases(folder / "canvases", 8, SIZE)}
    for spread in (False, True):
        torch.manual_seed(0)
        model = det.eca_detector(num_classes=3, img_size=SIZE).eval()
        if spread:  # class scores spread so the reference finds objects (the default prior is 0.01 everywhere)
            with torch.no_grad():
                model.cls.weight.mul_(300.0)
                model.cls.bias.uniform_(-3.0, 0.5)
        name = "spread" if spread else "prior"
        files[name] = folder / f"det_{name}.onnx"
        eca_deploy.export(model, SIZE, files[name])
    model = onnx.load(files["spread"])
    for name, wrong in (
        ("scaled", scaled_confidences(model, "cls")),
        ("shifted", shifted_deltas(model, "box", ANCHORS)),
    ):
        files[name] = folder / f"det_{name}.onnx"
        onnx.save(wrong, files[name])
    return files


def _check_example(files: dict[str, Path], name: str, reference: str, precision: str | None = None):
    from eca_deploy.detection.decoders import spec_for

    spec = spec_for("eca_detector", ["cls", "box"])
    return _check({**files, "fp32": files[reference]}, name, precision, detection=spec)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_example_detector_wrong_copies_fail_at_every_precision(example: dict[str, Path], precision: str) -> None:
    same = _check_example(example, "spread", "spread", precision)
    assert same.passed and same.detection.measured, same.failures
    scaled = _check_example(example, "scaled", "spread", precision)
    assert not scaled.passed and "detections (eca_detector: cls, box)" in "; ".join(scaled.failures)
    assert "scores lower by" in "; ".join(scaled.failures), scaled.failures
    shifted = _check_example(example, "shifted", "spread", precision)
    assert "boxes offset by 3.00 px" in "; ".join(shifted.failures), shifted.failures


def test_a_reference_that_finds_nothing_is_said_and_the_tensors_decide(example: dict[str, Path]) -> None:
    warnings: list[str] = []
    result = _check_example(example, "prior", "prior", None) if False else None
    from eca_deploy.detection.decoders import spec_for

    target = open_model(ModelSpec(example["prior"], kind="onnx", qdq_arithmetic=True))
    result = run_check(target, model_name=None, images=example["images"], reference_onnx=example["prior"],
                       detection=spec_for("eca_detector", ["cls", "box"]), warn=warnings.append)  # fmt: skip
    assert result.passed and result.detection is not None and not result.detection.measured
    assert "finds no detection" in result.detection.not_measured
    assert any("detection agreement was not measured" in w for w in warnings)
    assert all(c.decided_by == "tensor" for c in result.checks.values())
    assert np.isnan(result.detection.agreement.recall)

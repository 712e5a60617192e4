"""ultralytics' ONNX exports recognised from their own metadata_props: size, letterbox, names, detection head."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from eca_deploy.backends.handle import ModelSpec, open_model
from eca_deploy.data.images import Preprocessing
from eca_deploy.exporters.foreign_metadata import level_strides, ultralytics_names, ultralytics_size
from eca_deploy.exporters.metadata import read_metadata
from eca_deploy.interface import DETECTION, TENSOR, onnx_interface
from tests.conftest import assert_one_line_error
from tests.conftest_openvino import needs_openvino
from tests.conftest_yolo import YOLO_EXPORT_SIZE


def _with_props(path: Path, **changes: str) -> onnx.ModelProto:
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key in changes:
            prop.value = changes.pop(prop.key)
    for key, value in changes.items():
        model.metadata_props.add(key=key, value=value)
    return model


def test_ultralytics_export_is_recognised(ultralytics_onnx: Path) -> None:
    model = onnx.load(str(ultralytics_onnx))
    assert not any(p.key.startswith("eca_deploy.") for p in model.metadata_props)  # ultralytics' keys only
    meta = read_metadata(model)
    assert meta is not None
    assert meta.model == "onnx:ultralytics-YOLOv8n" and meta.exporter.startswith("ultralytics 8.")
    assert meta.preprocessing == Preprocessing.yolo(YOLO_EXPORT_SIZE)
    assert meta.preprocessing.describe() == f"letterbox {YOLO_EXPORT_SIZE}x{YOLO_EXPORT_SIZE}, grey 114, RGB/255"
    assert meta.detection is not None and meta.detection.layout == "yolov8"
    assert meta.detection.outputs == ("output0",)
    assert len(meta.detection.names) == 80 and meta.num_classes == 80
    assert meta.detection.strides == (8, 16, 32)
    assert not meta.notes

    interface = onnx_interface(model, label="yolo")
    assert interface.kinds == {"output0": DETECTION}
    assert interface.detection == meta.detection
    assert interface.preprocessing.letterbox and interface.size == (YOLO_EXPORT_SIZE, YOLO_EXPORT_SIZE)


@pytest.mark.parametrize("runtime", ["onnxruntime", pytest.param("openvino", marks=needs_openvino)])
def test_runners_read_the_same_description(ultralytics_onnx: Path, runtime: str) -> None:
    """What `run` and `bench --end-to-end` read from an open runner: ONNX Runtime's and OpenVINO's alike."""
    opened = open_model(ModelSpec(ultralytics_onnx, runtime=runtime))
    assert opened.runner.metadata == opened.metadata == read_metadata(opened.onnx)


def test_end_to_end_exports_are_tensors_said_aloud(ultralytics_onnx: Path) -> None:
    model = _with_props(ultralytics_onnx, end2end="True")
    said: list[str] = []
    interface = onnx_interface(model, label="yolo", warn=said.append)
    assert interface.kinds == {"output0": TENSOR} and interface.detection is None
    assert len(said) == 1 and "end2end=False" in said[0]
    assert interface.preprocessing.letterbox  # still ultralytics' preprocessing


def test_a_head_that_does_not_fit_the_names_is_not_decoded(ultralytics_onnx: Path) -> None:
    model = _with_props(ultralytics_onnx, names="{0: 'cat', 1: 'dog'}")  # 2 classes, but 84 = 4 + 80 channels
    said: list[str] = []
    interface = onnx_interface(model, label="yolo", warn=said.append)
    assert interface.kinds == {"output0": TENSOR} and interface.detection is None
    assert len(said) == 1 and "not the [N, 4 + 2 classes, anchors]" in said[0]


def test_classify_exports_are_cropped_without_mean_std(ultralytics_onnx: Path) -> None:
    meta = read_metadata(_with_props(ultralytics_onnx, task="classify", imgsz="[96, 96]"))
    assert meta is not None and meta.detection is None
    assert meta.preprocessing == Preprocessing(size=96, resize=96, mean=(0.0,) * 3, std=(1.0,) * 3)


def test_other_onnx_files_stay_unknown(ultralytics_onnx: Path) -> None:
    model = onnx.load(str(ultralytics_onnx))
    del model.metadata_props[:]
    assert read_metadata(model) is None
    assert read_metadata(_with_props(ultralytics_onnx, author="Someone else")) is None


def test_property_parsing() -> None:
    assert ultralytics_size({"imgsz": "[320, 256]"}) == (320, 256)
    assert ultralytics_size({"imgsz": "640"}) == (640, 640)
    assert ultralytics_size({"imgsz": "__import__('os')"}) is None  # literals only, never evaluated
    assert ultralytics_names({"names": "{0: 'person', 1: 'bicycle'}"}) == ("person", "bicycle")
    assert ultralytics_names({"names": "{1: 'a'}"}) == ()
    assert level_strides(32, (640, 640), 8400) == (8, 16, 32)
    assert level_strides(64, (640, 640), 8400 + 100) == (8, 16, 32, 64)
    assert level_strides(32, (640, 640), 8399) == ()


def test_check_without_a_reference_names_the_missing_one(cli, ultralytics_onnx: Path, tmp_path: Path) -> None:
    """A lone ultralytics export has no PyTorch model eca-deploy could rebuild: check asks for --reference-onnx."""
    alone = tmp_path / "alone" / "yolo.fused.onnx"  # no unfused sibling beside it
    alone.parent.mkdir()
    alone.write_bytes(ultralytics_onnx.read_bytes())
    result = cli("check", "--onnx", alone)
    assert_one_line_error(result, "--reference-onnx", "made outside eca-deploy")

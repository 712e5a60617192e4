"""The detection contract: a detector's head layout survives the ONNX metadata and reaches the interface."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from eca_deploy.data.images import Preprocessing
from eca_deploy.errors import EcaDeployError
from eca_deploy.exporters.metadata import ModelMetadata, onnx_interface, read_metadata, write_metadata
from eca_deploy.interface import DETECTION, DetectionSpec, OutputSpec


def _yolo_like(anchors: int = 2100, classes: int = 3) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 320, 320])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + classes, anchors])
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [1, 4 + classes, anchors])
    pool = helper.make_node("GlobalAveragePool", ["images"], ["p"])
    reshape = helper.make_node("Expand", ["p", "shape"], ["output0"])
    graph = helper.make_graph([pool, reshape], "g", [x], [y], [shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_detection_spec_round_trips_through_metadata() -> None:
    model = _yolo_like()
    spec = DetectionSpec("yolov8", ("output0",), ("a", "b", "c"), (8, 16, 32))
    meta = ModelMetadata(
        "yolo", (3,), 3, Preprocessing.for_size(320), 17, "test", "random(seed=0)", {},
        (OutputSpec("output0", (1, 7, 2100), DETECTION),), spec,
    )  # fmt: skip
    write_metadata(model, meta)
    back = read_metadata(model)
    assert back is not None and back.detection == spec
    assert back.outputs[0].kind == DETECTION
    interface = onnx_interface(model, label="yolo")
    assert interface.detection == spec
    assert interface.as_dict()["detection"]["layout"] == "yolov8"


def test_detection_spec_dropped_when_its_outputs_are_gone() -> None:
    model = _yolo_like()
    meta = ModelMetadata("yolo", (3,), 3, Preprocessing.for_size(320), 17, "test", "random(seed=0)", {},
                         (), DetectionSpec("yolov8", ("renamed",)))  # fmt: skip
    write_metadata(model, meta)
    assert onnx_interface(model, label="yolo").detection is None


def test_unknown_layout_is_one_line() -> None:
    with pytest.raises(EcaDeployError, match="unknown detection layout 'yolov99'"):
        DetectionSpec("yolov99", ("output0",))

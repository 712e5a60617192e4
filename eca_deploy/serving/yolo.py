"""Serving a YOLO raw head (layout `yolov8`): what the output is, what decodes it, and DeepStream's parser.

The exported output is [N, 4 + classes, anchors]: per anchor the box (cx, cy, w, h) in input pixels and
one score per class after the sigmoid; no NMS. Triton serves it as it is (the client decodes it: keep the
anchors whose best score passes a threshold, then NMS, then undo the letterbox).

DeepStream's nvinfer has no parser for it. The widely used one is `NvDsInferParseYolo` in
`libnvdsinfer_custom_impl_Yolo.so`, built from https://github.com/marcoslucianops/DeepStream-Yolo
(`CUDA_VER=<your CUDA> make -C nvdsinfer_custom_impl_Yolo`). Its parser reads one output [anchors, 6]:
x1, y1, x2, y2, the best class score and that class's index (as float), which that project's
`utils/export_yoloV8.py` produces from the raw head; `with_deepstream_yolo_output` appends the same
conversion to an ONNX model, so nvinfer builds its engine from a graph the parser reads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eca_deploy.interface import DetectionSpec

YOLO_LAYOUT = "yolov8"
PARSER_FUNCTION = "NvDsInferParseYolo"
PARSER_LIBRARY = "libnvdsinfer_custom_impl_Yolo.so"
PARSER_SOURCE = "https://github.com/marcoslucianops/DeepStream-Yolo"
DEEPSTREAM_OUTPUT = "output"  # the name DeepStream-Yolo's export gives it
# (cx, cy, w, h) @ XYXY = (cx - w/2, cy - h/2, cx + w/2, cy + h/2)
XYXY = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [-0.5, 0, 0.5, 0], [0, -0.5, 0, 0.5]], dtype=np.float64)


def yolo_detection(metadata: Any) -> DetectionSpec | None:
    """The model's DetectionSpec when its head is a YOLO raw head (layout yolov8), else None."""
    detection = getattr(metadata, "detection", None)
    return detection if detection is not None and detection.layout == YOLO_LAYOUT else None


def layout_text(detection: DetectionSpec, classes: int) -> str:
    """One sentence: the output, its layout and what decodes it."""
    output = detection.outputs[0]
    return (
        f"Output `{output}` is YOLO's raw head (layout {YOLO_LAYOUT}), [4 + {classes}, anchors] per image: boxes "
        "(cx, cy, w, h) in input pixels, then one score per class after the sigmoid; no NMS. Decode it on the "
        "client: keep the anchors whose best score passes a threshold, run NMS, undo the letterbox "
        "(`eca-deploy run` does all three for this layout)."
    )


def with_deepstream_yolo_output(model: onnx.ModelProto, raw: str) -> onnx.ModelProto:
    """A copy of `model` whose output is [N, anchors, 6] (x1, y1, x2, y2, score, class) from the raw head `raw`,
    the layout DeepStream-Yolo's NvDsInferParseYolo reads; named `output`."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    value = next(v for v in out.graph.output if v.name == raw)
    elem = value.type.tensor_type.elem_type
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    p = "eca_deploy_deepstream_"
    out.graph.initializer.append(numpy_helper.from_array(XYXY.astype(dtype), f"{p}xyxy"))
    for name, data in (
        ("start0", [0]),
        ("end4", [4]),
        ("start4", [4]),
        ("end", [np.iinfo(np.int64).max]),
        ("axis2", [2]),
    ):
        out.graph.initializer.append(numpy_helper.from_array(np.array(data, np.int64), f"{p}{name}"))
    out.graph.node.extend([
        helper.make_node("Transpose", [raw], [f"{p}rows"], perm=[0, 2, 1], name=f"{p}transpose"),
        helper.make_node("Slice", [f"{p}rows", f"{p}start0", f"{p}end4", f"{p}axis2"], [f"{p}cxcywh"],
                         name=f"{p}boxes"),
        helper.make_node("Slice", [f"{p}rows", f"{p}start4", f"{p}end", f"{p}axis2"], [f"{p}scores"],
                         name=f"{p}scores"),
        helper.make_node("MatMul", [f"{p}cxcywh", f"{p}xyxy"], [f"{p}x1y1x2y2"], name=f"{p}to_xyxy"),
        helper.make_node("ArgMax", [f"{p}scores"], [f"{p}class_index"], axis=2, keepdims=1, name=f"{p}argmax"),
        helper.make_node("GatherElements", [f"{p}scores", f"{p}class_index"], [f"{p}best"], axis=2,
                         name=f"{p}best_score"),
        helper.make_node("Cast", [f"{p}class_index"], [f"{p}class"], to=elem, name=f"{p}class_as_float"),
        helper.make_node("Concat", [f"{p}x1y1x2y2", f"{p}best", f"{p}class"], [DEEPSTREAM_OUTPUT], axis=2,
                         name=f"{p}concat"),
    ])  # fmt: skip
    dims = value.type.tensor_type.shape.dim
    batch = dims[0].dim_value if dims[0].HasField("dim_value") else (dims[0].dim_param or "batch")
    anchors = dims[2].dim_value if len(dims) == 3 and dims[2].HasField("dim_value") else "anchors"
    del out.graph.output[:]
    out.graph.output.append(helper.make_tensor_value_info(DEEPSTREAM_OUTPUT, elem, [batch, anchors, 6]))
    return out


def labels_text(detection: DetectionSpec, labels: tuple[str, ...]) -> str:
    """A detector's labels file for nvinfer: one class name per line."""
    return "\n".join(labels or detection.names) + "\n"

"""Tell an ONNX model's precision from its graph: Q/DQ nodes mean INT8, float16 tensors mean FP16."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # onnx is imported when a model is read: `eca-deploy --help` imports this module
    import onnx

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def detect_precision(model: onnx.ModelProto) -> str:
    """'int8' if the graph has Q/DQ nodes, 'fp16' if it computes in float16, else 'fp32'."""
    if any(node.op_type in QDQ_OPS for node in model.graph.node):
        return "int8"
    import onnx

    fp16 = onnx.TensorProto.FLOAT16
    if any(t.data_type == fp16 for t in model.graph.initializer):
        return "fp16"
    values = (*model.graph.input, *model.graph.value_info, *model.graph.output)
    if any(v.type.tensor_type.elem_type == fp16 for v in values):
        return "fp16"
    for node in model.graph.node:
        if node.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in node.attribute):
            return "fp16"
    return "fp32"

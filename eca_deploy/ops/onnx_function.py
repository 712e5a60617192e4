"""The ECA op as an ONNX model-local function, so a fused model runs in any standard ONNX runtime.

The body is the standard-op decomposition of docs/eca_op.md:
GlobalAveragePool -> [N,1,C] -> Conv(k, SAME padding) -> [N,C,1,1] -> Sigmoid -> Mul.
`auto_pad=SAME_UPPER` with stride 1 and odd k pads (k-1)/2 on both sides, which lets the body take any k
from the `weights` attribute (pads cannot be computed from an attribute inside a function).
"""

from __future__ import annotations

import onnx
from onnx import AttributeProto, helper

from eca_deploy.ops import (
    ECA_DOMAIN,
    ECA_DOMAIN_VERSION,
    ECA_OP_TYPE,
    ECA_PLUGIN_NAMESPACE,
    ECA_PLUGIN_VERSION,
    ECA_WEIGHTS_ATTR,
)

# CastLike (for float16 inputs) exists from opset 15; below it the function serves float32.
CASTLIKE_OPSET = 15


def _ref_attr(name: str, ref: str, attr_type: AttributeProto.AttributeType) -> AttributeProto:
    attr = AttributeProto()
    attr.name, attr.ref_attr_name, attr.type = name, ref, attr_type
    return attr


def eca_function(opset: int) -> onnx.FunctionProto:
    """FunctionProto `eca_deploy.ECA(X) -> Y` with attribute `weights` (floats), valid for `opset`."""
    const = helper.make_tensor
    weights = helper.make_node("Constant", [], ["w_flat"])
    weights.attribute.append(_ref_attr("value_floats", ECA_WEIGHTS_ATTR, AttributeProto.FLOATS))
    nodes = [
        helper.make_node("GlobalAveragePool", ["X"], ["pooled"]),  # [N,C,1,1]
        helper.make_node("Constant", [], ["axis3"], value=const("axis3", onnx.TensorProto.INT64, [1], [3])),
        helper.make_node("Squeeze", ["pooled", "axis3"], ["pooled_nc1"]),  # [N,C,1]
        helper.make_node("Transpose", ["pooled_nc1"], ["pooled_n1c"], perm=[0, 2, 1]),  # [N,1,C]
        weights,
        helper.make_node("Constant", [], ["w_shape"], value=const("w_shape", onnx.TensorProto.INT64, [3], [1, 1, -1])),
        helper.make_node("Reshape", ["w_flat", "w_shape"], ["w_f32"]),  # [1,1,k]
    ]
    if opset >= CASTLIKE_OPSET:
        nodes.append(helper.make_node("CastLike", ["w_f32", "X"], ["w"]))
    else:
        nodes.append(helper.make_node("Identity", ["w_f32"], ["w"]))
    nodes += [
        helper.make_node("Conv", ["pooled_n1c", "w"], ["mixed"], auto_pad="SAME_UPPER"),  # [N,1,C]
        helper.make_node("Transpose", ["mixed"], ["mixed_nc1"], perm=[0, 2, 1]),
        helper.make_node("Unsqueeze", ["mixed_nc1", "axis3"], ["logit"]),  # [N,C,1,1]
        helper.make_node("Sigmoid", ["logit"], ["gate"]),
        helper.make_node("Mul", ["X", "gate"], ["Y"]),
    ]
    function = helper.make_function(
        ECA_DOMAIN,
        ECA_OP_TYPE,
        inputs=["X"],
        outputs=["Y"],
        nodes=nodes,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(ECA_DOMAIN, ECA_DOMAIN_VERSION)],
        attributes=["plugin_version", "plugin_namespace"],
        attribute_protos=[helper.make_attribute(ECA_WEIGHTS_ATTR, [1.0])],
        doc_string="Efficient Channel Attention: Y = X * sigmoid(conv1d_k(mean_hw(X))), zero padding (k-1)/2.",
    )
    return function


def make_eca_node(x: str, y: str, weights: list[float], name: str) -> onnx.NodeProto:
    """One fused ECA node, with the attributes the TensorRT ONNX parser reads to pick the plugin."""
    return helper.make_node(
        ECA_OP_TYPE,
        [x],
        [y],
        name=name,
        domain=ECA_DOMAIN,
        **{
            ECA_WEIGHTS_ATTR: [float(w) for w in weights],
            "plugin_version": ECA_PLUGIN_VERSION,
            "plugin_namespace": ECA_PLUGIN_NAMESPACE,
        },
    )

"""The ECA op as ONNX model-local functions, so a fused model runs in any standard ONNX runtime.

Each variant of the op (docs/eca_op.md) is one function body, told apart by the ONNX function overload
(`EcaVariant.overload`; "" for the original op, whose body is unchanged):

    GlobalAveragePool -> [N,1,C] -> [circular: Concat(tail, m, head)] -> Conv(k, bias) -> [N,C,1,1]
    -> Sigmoid | HardSigmoid -> Mul(X, gate) -> [Add(residual)] -> [Relu]

Zero padding is `auto_pad=SAME_UPPER` (stride 1 and odd k pad (k-1)/2 on both sides), which lets the body
take any k from the `weights` attribute; circular padding computes (k-1)/2 from the weights' length at run
time, so it needs (k-1)/2 <= C there, as PyTorch's circular padding does.
"""

from __future__ import annotations

import onnx
from onnx import AttributeProto, TensorProto, helper

from eca_deploy.ops.contract import (
    ECA_DOMAIN,
    ECA_DOMAIN_VERSION,
    ECA_FIELD_SET_ATTR,
    ECA_OP_TYPE,
    ECA_PLUGIN_NAMESPACE,
    ECA_PLUGIN_VERSION,
    ECA_WEIGHTS_ATTR,
    HARD_SIGMOID_ALPHA,
    HARD_SIGMOID_BETA,
    OVERLOAD_IR_VERSION,
    EcaAttributes,
    EcaVariant,
    is_eca_node,
    plugin_field_set_hash,
)

# CastLike (for float16 inputs) exists from opset 15; below it the function serves float32.
CASTLIKE_OPSET = 15
# Attributes the body does not read (the variant picks the body); declared so nodes may carry them.
_PASSIVE_ATTRIBUTES = ["plugin_version", "plugin_namespace", ECA_FIELD_SET_ATTR, "padding", "gate", "activation"]


def _ref_attr(name: str, ref: str, attr_type: AttributeProto.AttributeType) -> AttributeProto:
    attr = AttributeProto()
    attr.name, attr.ref_attr_name, attr.type = name, ref, attr_type
    return attr


def _const_ints(name: str, values: list[int]) -> onnx.NodeProto:
    value = helper.make_tensor(name, TensorProto.INT64, [len(values)], values)
    return helper.make_node("Constant", [], [name], value=value)


def _cast_like(src: str, dst: str, opset: int) -> onnx.NodeProto:
    if opset >= CASTLIKE_OPSET:
        return helper.make_node("CastLike", [src, "X"], [dst])
    return helper.make_node("Identity", [src], [dst])


def _circular_pad(source: str, target: str) -> list[onnx.NodeProto]:
    """[N,1,C] -> [N,1,C+2p] with p = (k-1)/2 channels wrapped around from the other end."""
    return [
        helper.make_node("Shape", ["w_flat"], ["k"]),
        _const_ints("one", [1]),
        _const_ints("two", [2]),
        helper.make_node("Sub", ["k", "one"], ["k_minus_1"]),
        helper.make_node("Div", ["k_minus_1", "two"], ["p"]),
        helper.make_node("Shape", [source], ["shape_n1c"]),
        _const_ints("three", [3]),
        helper.make_node("Slice", ["shape_n1c", "two", "three"], ["c"]),
        helper.make_node("Sub", ["c", "p"], ["c_minus_p"]),
        _const_ints("zero", [0]),
        helper.make_node("Slice", [source, "c_minus_p", "c", "two"], ["tail"]),
        helper.make_node("Slice", [source, "zero", "p", "two"], ["head"]),
        helper.make_node("Concat", ["tail", source, "head"], [target], axis=2),
    ]


def eca_function(opset: int, variant: EcaVariant | None = None) -> onnx.FunctionProto:
    """FunctionProto `eca_deploy.ECA` (overload `variant.overload`) valid for `opset`."""
    variant = variant or EcaVariant()
    const = helper.make_tensor
    weights = helper.make_node("Constant", [], ["w_flat"])
    weights.attribute.append(_ref_attr("value_floats", ECA_WEIGHTS_ATTR, AttributeProto.FLOATS))
    bias = helper.make_node("Constant", [], ["b_scalar"])
    bias.attribute.append(_ref_attr("value_float", "bias", AttributeProto.FLOAT))
    nodes = [
        helper.make_node("GlobalAveragePool", ["X"], ["pooled"]),  # [N,C,1,1]
        helper.make_node("Constant", [], ["axis3"], value=const("axis3", TensorProto.INT64, [1], [3])),
        helper.make_node("Squeeze", ["pooled", "axis3"], ["pooled_nc1"]),  # [N,C,1]
        helper.make_node("Transpose", ["pooled_nc1"], ["pooled_n1c"], perm=[0, 2, 1]),  # [N,1,C]
        weights,
        helper.make_node("Constant", [], ["w_shape"], value=const("w_shape", TensorProto.INT64, [3], [1, 1, -1])),
        helper.make_node("Reshape", ["w_flat", "w_shape"], ["w_f32"]),  # [1,1,k]
        _cast_like("w_f32", "w", opset),
    ]
    conv_inputs = ["pooled_n1c", "w"]
    if variant.padding == "circular":
        nodes += _circular_pad("pooled_n1c", "padded_n1c")
        conv_inputs[0] = "padded_n1c"
    conv_pad = {} if variant.padding == "circular" else {"auto_pad": "SAME_UPPER"}
    nodes += [
        bias,
        helper.make_node("Constant", [], ["b_shape"], value=const("b_shape", TensorProto.INT64, [1], [1])),
        helper.make_node("Reshape", ["b_scalar", "b_shape"], ["b_f32"]),  # [1]
        _cast_like("b_f32", "b", opset),
        helper.make_node("Conv", [*conv_inputs, "b"], ["mixed"], **conv_pad),  # [N,1,C]
        helper.make_node("Transpose", ["mixed"], ["mixed_nc1"], perm=[0, 2, 1]),
        helper.make_node("Unsqueeze", ["mixed_nc1", "axis3"], ["logit"]),  # [N,C,1,1]
    ]
    if variant.gate == "hard_sigmoid":
        nodes.append(
            helper.make_node("HardSigmoid", ["logit"], ["gate"], alpha=HARD_SIGMOID_ALPHA, beta=HARD_SIGMOID_BETA)
        )
    else:
        nodes.append(helper.make_node("Sigmoid", ["logit"], ["gate"]))
    # The last node writes Y; the residual and the activation come after the scale.
    steps = [("Mul", ["X", "gate"])]
    if variant.residual:
        steps.append(("Add", ["residual"]))
    if variant.activation == "relu":
        steps.append(("Relu", []))
    previous = None
    for i, (op, extra) in enumerate(steps):
        out = "Y" if i == len(steps) - 1 else f"y{i}"
        nodes.append(helper.make_node(op, ([previous] if previous else []) + extra, [out]))
        previous = out
    function = helper.make_function(
        ECA_DOMAIN,
        ECA_OP_TYPE,
        inputs=["X", "residual"] if variant.residual else ["X"],
        outputs=["Y"],
        nodes=nodes,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(ECA_DOMAIN, ECA_DOMAIN_VERSION)],
        attributes=_PASSIVE_ATTRIBUTES,
        attribute_protos=[helper.make_attribute(ECA_WEIGHTS_ATTR, [1.0]), helper.make_attribute("bias", 0.0)],
        doc_string="Efficient Channel Attention: Y = act(X * gate(conv1d_k(pad(mean_hw(X))) + bias) + residual).",
    )
    function.overload = variant.overload
    return function


def make_eca_node(
    x: str, y: str, attributes: EcaAttributes | list[float] | tuple[float, ...], name: str, residual: str | None = None
) -> onnx.NodeProto:
    """One fused ECA node, with the attributes the TensorRT ONNX parser reads to pick the plugin."""
    attrs = EcaAttributes.of(attributes)
    if residual is not None and not attrs.residual:
        attrs = EcaAttributes(attrs.weights, attrs.bias, attrs.padding, attrs.gate, attrs.activation, residual=True)
    if attrs.residual and residual is None:
        raise ValueError("an ECA node with a residual needs the residual tensor's name")
    node = helper.make_node(
        ECA_OP_TYPE,
        [x, residual] if residual is not None else [x],
        [y],
        name=name,
        domain=ECA_DOMAIN,
        **attrs.node_attributes(),
        plugin_version=ECA_PLUGIN_VERSION,
        plugin_namespace=ECA_PLUGIN_NAMESPACE,
        **{ECA_FIELD_SET_ATTR: plugin_field_set_hash()},  # the library refuses a node of another op contract
    )
    node.overload = attrs.variant.overload
    return node


def node_attributes(node: onnx.NodeProto) -> EcaAttributes:
    """The contract's attributes of an ECA node (defaults for those it does not carry)."""
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return EcaAttributes.from_onnx(values, sum(1 for i in node.input if i))


def add_eca_functions(model: onnx.ModelProto, opset: int) -> None:
    """Give `model` the function body of every ECA variant its nodes use (and the domain import)."""
    if not any(o.domain == ECA_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(ECA_DOMAIN, ECA_DOMAIN_VERSION))
    have = {f.overload for f in model.functions if f.domain == ECA_DOMAIN and f.name == ECA_OP_TYPE}
    variants = {node_attributes(n).variant for n in model.graph.node if is_eca_node(n)}
    for variant in sorted(variants, key=lambda v: v.overload):
        if variant.overload not in have:
            model.functions.append(eca_function(opset, variant))
            have.add(variant.overload)
    if have - {""} and model.ir_version < OVERLOAD_IR_VERSION:
        model.ir_version = OVERLOAD_IR_VERSION

"""Q/DQ placement for TensorRT's explicit quantization, and its insertion into an ONNX graph.

Layout (TensorRT's Q/DQ rules, and what NVIDIA ModelOpt emits for CNNs):

- every input of a weighted op is quantized: the activation per tensor, the weight per output channel
  (axis 0 for Conv and for Gemm with transB=1, axis 1 for Gemm without it and for MatMul);
- outputs of weighted ops are not quantized (TensorRT fuses the bias, ReLU and the next Q itself);
- both inputs of a residual Add, and the inputs of pooling layers, are quantized so they run in INT8;
- GEMMs with a dimension below 16 (a 10-class head) stay in float, as ModelOpt leaves them;
- symmetric int8, zero point 0; weights stay float32 in the file (QuantizeLinear -> DequantizeLinear),
  which TensorRT folds at build time;
- the ECA gate (pool, 1-D conv, sigmoid, multiply) stays in float: the gate is a 0..1 value per channel that
  scales the whole feature map, and a fused ECA node is a plugin that computes in float;
- a head's decoding stays in float (`decoding_nodes`): everything between the network's last learned layers
  and its outputs. For YOLOv8 that is the DFL softmax and its fixed 1x16 conv, the Sub/Add that turn
  distances into corners, the Mul by the strides, the sigmoid and the Concats: box coordinates of hundreds
  of pixels and scores in 0..1 in one tensor, which a per-tensor int8 scale cannot hold both of.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eca_deploy.fusion.eca_pattern import EcaMatch, match_eca
from eca_deploy.fusion.graph import GraphIndex, attr

INT8_MAX = 127.0
POOL_OPS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool"})
MIN_SCALE = 1e-12
MIN_GEMM_DIM = 16  # like ModelOpt: GEMMs with a dimension below 16 stay in float


WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
SHAPE_OPS = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


def decoding_nodes(model: onnx.ModelProto) -> set[int]:
    """Indices of the nodes that decode a head: walking back from every graph output, each node up to (not
    including) the last learned layers on that path.

    A learned layer is a Conv/ConvTranspose/Gemm/MatMul with a constant weight, except one that reads a
    Softmax's output (through reshapes/transposes): that is an expectation over a distribution with a fixed
    kernel (YOLOv8's DFL 1x16 conv), decoding arithmetic. For a classifier whose logits come from a Gemm
    the walk stops at once: nothing changes.
    """
    index = GraphIndex(model)
    nodes = list(model.graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}

    def constant(name: str) -> bool:
        return name in index.initializers or index.constant(name) is not None

    def reads_softmax(node: onnx.NodeProto) -> bool:
        name = node.input[0]
        while name in producer:
            src = nodes[producer[name]]
            if src.op_type == "Softmax":
                return True
            if src.op_type not in SHAPE_OPS:
                return False
            name = src.input[0]
        return False

    def learned(node: onnx.NodeProto) -> bool:
        return (
            node.op_type in WEIGHTED_OPS and len(node.input) > 1 and constant(node.input[1]) and not reads_softmax(node)
        )

    tail: set[int] = set()
    stack = [producer[o.name] for o in model.graph.output if o.name in producer]
    while stack:
        i = stack.pop()
        if i in tail or learned(nodes[i]):
            continue
        tail.add(i)
        stack += [producer[x] for x in nodes[i].input if x in producer]
    return tail


@dataclass
class QuantPlan:
    """What to quantize: activation tensors per tensor, constant weights per channel, and who consumes them."""

    activations: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    weights: dict[tuple[int, int], int] = field(default_factory=dict)  # (node index, input) -> channel axis
    eca_blocks: int = 0  # unfused ECA blocks found
    eca_gate_quantized: bool = False
    decoding_nodes: int = 0  # nodes of a head's decoding, kept in float

    def add_activation(self, name: str, node: int, pos: int) -> None:
        self.activations[name].append((node, pos))


def eca_blocks(model: onnx.ModelProto) -> list[EcaMatch]:
    """The unfused ECA blocks of `model` (the fusion pass's structural matcher)."""
    index = GraphIndex(model)
    found = []
    for node in model.graph.node:
        m = match_eca(index, node)
        if isinstance(m, EcaMatch):
            found.append(m)
    return found


def _large_gemm(index: GraphIndex, weight: str) -> bool:
    """A constant 2-D weight with both dimensions >= 16: smaller GEMMs (a 10-class head) gain nothing in INT8."""
    init = index.initializers.get(weight)
    return init is not None and len(init.dims) == 2 and min(init.dims) >= MIN_GEMM_DIM


def plan_quantization(model: onnx.ModelProto, quantize_eca_gate: bool = False) -> QuantPlan:
    """Decide which tensors get Q/DQ (see the module docstring)."""
    graph = model.graph
    index = GraphIndex(model)
    position = {id(n): i for i, n in enumerate(graph.node)}
    blocks = eca_blocks(model)
    gate_nodes = {id(n) for b in blocks for n in b.nodes}
    plan = QuantPlan(eca_blocks=len(blocks), eca_gate_quantized=quantize_eca_gate and bool(blocks))
    decoding = decoding_nodes(model)
    plan.decoding_nodes = sum(1 for i in decoding if graph.node[i].op_type not in ("Constant", "Shape"))

    def constant(name: str) -> bool:
        return name in index.initializers or index.constant(name) is not None

    def activation(name: str, node: int, pos: int) -> None:
        if name and not constant(name):
            plan.add_activation(name, node, pos)

    for i, node in enumerate(graph.node):
        if id(node) in gate_nodes or i in decoding:
            continue
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            continue  # custom ops (the fused ECA node) stay in float
        if op == "Conv" and len(node.input) > 1 and node.input[1] in index.initializers:
            activation(node.input[0], i, 0)
            plan.weights[(i, 1)] = 0
        elif op == "Gemm" and len(node.input) > 1 and _large_gemm(index, node.input[1]):
            if not attr(node, "transA", 0):
                activation(node.input[0], i, 0)
                plan.weights[(i, 1)] = 0 if attr(node, "transB", 0) else 1
        elif op == "MatMul" and _large_gemm(index, node.input[1]):
            activation(node.input[0], i, 0)
            plan.weights[(i, 1)] = 1
        elif op == "Add" and not any(constant(x) for x in node.input):
            activation(node.input[0], i, 0)
            activation(node.input[1], i, 1)
        elif op in POOL_OPS:
            activation(node.input[0], i, 0)
    if plan.eca_gate_quantized:
        for block in blocks:
            for node in block.nodes:
                i = position[id(node)]
                if node.op_type in ("GlobalAveragePool", "ReduceMean"):
                    activation(node.input[0], i, 0)
                elif node.op_type == "Conv":
                    activation(node.input[0], i, 0)
                    plan.weights[(i, 1)] = 0
                elif node is block.mul:
                    activation(node.input[0], i, 0)
                    activation(node.input[1], i, 1)
    return plan


def _scalar(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def _zero_point(name: str, shape: tuple[int, ...] = ()) -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(shape, np.int8), name)


def weight_scales(weight: np.ndarray, axis: int) -> np.ndarray:
    """Per-channel symmetric scales: max |w| over every axis but `axis`, / 127 (never zero)."""
    other = tuple(a for a in range(weight.ndim) if a != axis)
    amax = np.abs(weight).max(axis=other) if other else np.abs(weight)
    return np.where(amax > 0, amax / INT8_MAX, 1.0).astype(np.float32)


def insert_qdq(model: onnx.ModelProto, plan: QuantPlan, ranges: dict[str, float]) -> onnx.ModelProto:
    """A copy of `model` with QuantizeLinear/DequantizeLinear pairs as `plan` says, scales from `ranges`."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    nodes = list(graph.node)
    pending: dict[int, list[onnx.NodeProto]] = defaultdict(list)  # Q/DQ to emit before node i
    new_inits: list[onnx.TensorProto] = []

    for tensor, uses in plan.activations.items():
        amax = float(ranges[tensor])
        base = tensor.replace("/", "_").strip("_") or "t"
        scale, zp = f"{base}_qscale", f"{base}_qzero"
        new_inits += [_scalar(scale, max(amax, MIN_SCALE * INT8_MAX) / INT8_MAX), _zero_point(zp)]
        q = helper.make_node("QuantizeLinear", [tensor, scale, zp], [f"{base}_q"], name=f"{base}_QuantizeLinear")
        dq = helper.make_node(
            "DequantizeLinear", [f"{base}_q", scale, zp], [f"{base}_dq"], name=f"{base}_DequantizeLinear"
        )
        first = min(i for i, _ in uses)
        pending[first] += [q, dq]
        for i, pos in uses:
            nodes[i].input[pos] = dq.output[0]

    for (i, pos), axis in plan.weights.items():
        name = nodes[i].input[pos]
        weight = numpy_helper.to_array(inits[name])
        base = f"{name.replace('/', '_').strip('_')}_{i}"
        scale, zp = f"{base}_wscale", f"{base}_wzero"
        scales = weight_scales(weight, axis)
        new_inits += [numpy_helper.from_array(scales, scale), _zero_point(zp, scales.shape)]
        q = helper.make_node(
            "QuantizeLinear", [name, scale, zp], [f"{base}_wq"], name=f"{base}_QuantizeLinear", axis=axis
        )
        dq = helper.make_node(
            "DequantizeLinear", [f"{base}_wq", scale, zp], [f"{base}_wdq"], name=f"{base}_DequantizeLinear", axis=axis
        )
        pending[i] += [q, dq]
        nodes[i].input[pos] = dq.output[0]

    ordered: list[onnx.NodeProto] = []
    for i, node in enumerate(nodes):
        ordered += pending.get(i, [])
        ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)
    graph.initializer.extend(new_inits)
    return out


def qdq_summary(model: onnx.ModelProto) -> dict[str, int]:
    """Counts of Q/DQ nodes, per-channel weight pairs and per-tensor activation pairs."""
    inits = {t.name for t in model.graph.initializer}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    weights = sum(1 for n in q if n.input[0] in inits)
    return {"quantize_linear": len(q), "weights_per_channel": weights, "activations_per_tensor": len(q) - weights}

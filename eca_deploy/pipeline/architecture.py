"""Does an ONNX graph come from this PyTorch network? Compare what export and every later pass preserve.

BatchNorm folding, fusion, FP16 conversion and Q/DQ change ops and initializers, but not the 2-D
convolutions: their count and weight shapes survive every stage (a Q/DQ or FP16 weight is traced back
through DequantizeLinear / Cast to its initializer). The number of ECA gates survives too (a 1-D Conv
before fusion, one ECA node after it). A graph whose numbers differ from the network's is another
architecture, and no cosine between their outputs means anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from torch import nn

from eca_deploy.models.eca import eca_gates

_PASS_THROUGH = {"DequantizeLinear", "QuantizeLinear", "Cast", "Identity"}


@dataclass(frozen=True)
class Structure:
    convs: int  # 2-D convolutions
    conv_weights: int  # their weight elements
    eca_gates: int

    def describe(self) -> str:
        return f"{self.convs} conv layers, {self.conv_weights:,} conv weights, {self.eca_gates} ECA gates"


def torch_structure(model: nn.Module) -> Structure:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return Structure(len(convs), sum(m.weight.numel() for m in convs), len(eca_gates(model)))


def onnx_structure(model: onnx.ModelProto) -> Structure:
    graph = model.graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    for node in graph.node:  # Constant nodes hold weights in some exports
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            shapes[node.output[0]] = tuple(node.attribute[0].t.dims)

    def weight_shape(name: str) -> tuple[int, ...] | None:
        for _ in range(8):
            if name in shapes:
                return shapes[name]
            node = producers.get(name)
            if node is None or node.op_type not in _PASS_THROUGH or not node.input:
                return None
            name = node.input[0]
        return None

    convs = weights = gates = 0
    for node in graph.node:
        if node.op_type == "ECA":
            gates += 1
        elif node.op_type == "Conv" and len(node.input) > 1:
            shape = weight_shape(node.input[1])
            if shape is None:
                continue
            if len(shape) == 4:
                convs += 1
                weights += int(_prod(shape))
            elif len(shape) == 3 and shape[:2] == (1, 1):
                gates += 1
    return Structure(convs, weights, gates)


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


def mismatch(onnx_model: onnx.ModelProto, model: nn.Module) -> str | None:
    """A one-line description of how the graph and the network differ, or None when they match."""
    a, b = onnx_structure(onnx_model), torch_structure(model)
    if a == b or a.convs == 0:  # no 2-D convolutions found: a graph we cannot read this way; do not guess
        return None
    return f"the ONNX has {a.describe()}; the PyTorch model has {b.describe()}"

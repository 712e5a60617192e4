"""A read-only index over an ONNX graph: producers, consumers, constants and inferred shapes."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

Dim = int | str | None  # int: static, str: symbolic, None: unknown


class GraphIndex:
    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.model = model
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers[inp].append(node)
        self.initializers = {t.name: t for t in graph.initializer}
        self.graph_outputs = {o.name for o in graph.output}
        self.shapes = _infer_shapes(model)

    def constant(self, name: str) -> np.ndarray | None:
        """The value of `name` if it is an initializer or a Constant node's output (through Identity)."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Identity":
            return self.constant(node.input[0])
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
                if attr.name == "value_floats":
                    return np.asarray(attr.floats, np.float32)
                if attr.name == "value_ints":
                    return np.asarray(attr.ints, np.int64)
        return None

    def shape(self, name: str) -> tuple[Dim, ...] | None:
        return self.shapes.get(name)

    def only_consumer_is(self, name: str, node: onnx.NodeProto) -> bool:
        return name not in self.graph_outputs and all(c is node for c in self.consumers.get(name, []))


def attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _infer_shapes(model: onnx.ModelProto) -> dict[str, tuple[Dim, ...]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # shape inference is a help for matching, never a requirement
        inferred = model
    g = inferred.graph
    shapes: dict[str, tuple[Dim, ...]] = {}
    for vi in (*g.input, *g.value_info, *g.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            shapes[vi.name] = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim
            )
    for t in g.initializer:
        shapes[t.name] = tuple(t.dims)
    return shapes


def remove_dead_nodes(model: onnx.ModelProto) -> int:
    """Drop nodes none of whose outputs is used; return how many were removed."""
    graph = model.graph
    removed = 0
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        keep = [n for n in graph.node if any(o in used for o in n.output if o)]
        if len(keep) == len(graph.node):
            break
        removed += len(graph.node) - len(keep)
        del graph.node[:]
        graph.node.extend(keep)
    used = {i for n in graph.node for i in n.input}
    for init in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(init)
    names = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    for vi in [v for v in graph.value_info if v.name not in names]:
        graph.value_info.remove(vi)
    return removed

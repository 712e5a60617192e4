"""FP32 -> FP16 conversion of an ONNX graph, with float32 inputs and outputs by default.

The pass decides per node whether it computes in float16 (the default) or stays in float32 (op types or node
names on a keep-list), converts float initializers and Constant values to match, and inserts a Cast wherever a
tensor crosses between the two. Shapes, indices and other non-float tensors are untouched. The fused ECA op
takes float16 through its ONNX function (CastLike) from opset 15; at opsets 13 and 14 it is kept in float32.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from eca_deploy.fusion.fuse import default_opset
from eca_deploy.ops import is_eca_node
from eca_deploy.ops.onnx_function import CASTLIKE_OPSET

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
FP16_MAX = float(np.finfo(np.float16).max)

# Inputs that must stay float32 whatever the node computes in: {op_type: input positions}.
FLOAT32_INPUTS: dict[str, frozenset[int]] = {
    "Resize": frozenset({1, 2}),  # roi, scales
    "Upsample": frozenset({1}),
}


@dataclass
class Fp16Report:
    fp16_nodes: int = 0
    fp32_nodes: list[str] = field(default_factory=list)  # node names (or op types) kept in float32
    casts: int = 0
    clipped_initializers: list[str] = field(default_factory=list)  # values beyond the float16 range

    def as_dict(self) -> dict[str, object]:
        return {
            "fp16_nodes": self.fp16_nodes,
            "fp32_nodes": self.fp32_nodes,
            "casts": self.casts,
            "clipped_initializers": self.clipped_initializers,
        }


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of float32 tensors (graph inputs, initializers, node outputs) after shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    names = {v.name for v in (*g.input, *g.value_info, *g.output) if v.type.tensor_type.elem_type == FLOAT}
    names |= {t.name for t in g.initializer if t.data_type == FLOAT}
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if (a.name == "value" and a.t.data_type == FLOAT) or a.name in ("value_float", "value_floats"):
                    names.add(node.output[0])
        if is_eca_node(node):
            names |= set(node.input) | set(node.output)  # functions are not always inferred through
    return names


def _keeps_fp32(node: onnx.NodeProto, keep_ops: set[str], keep_nodes: set[str], opset: int) -> bool:
    if node.op_type in keep_ops or node.name in keep_nodes:
        return True
    return is_eca_node(node) and opset < CASTLIKE_OPSET


def _to_half(array: np.ndarray, name: str, report: Fp16Report) -> np.ndarray:
    if np.abs(array).max(initial=0.0) > FP16_MAX:
        report.clipped_initializers.append(name)
    return np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16)


def _convert_constant(node: onnx.NodeProto, report: Fp16Report) -> None:
    for a in node.attribute:
        if a.name == "value" and a.t.data_type == FLOAT:
            a.t.CopyFrom(
                numpy_helper.from_array(_to_half(numpy_helper.to_array(a.t), node.output[0], report), a.t.name)
            )
        elif a.name in ("value_float", "value_floats"):
            values = np.asarray(a.f if a.name == "value_float" else a.floats, np.float32)
            tensor = numpy_helper.from_array(
                _to_half(values.reshape(() if a.name == "value_float" else -1), "", report)
            )
            a.Clear()
            a.CopyFrom(helper.make_attribute("value", tensor))


def convert_to_fp16(
    model: onnx.ModelProto,
    keep_io_types: bool = True,
    keep_fp32_ops: Iterable[str] = (),
    keep_fp32_nodes: Iterable[str] = (),
) -> tuple[onnx.ModelProto, Fp16Report]:
    """A float16 copy of `model`; `keep_io_types` keeps float32 graph inputs and outputs (Cast inside)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    report = Fp16Report()
    floats = _float_tensors(out)
    opset = default_opset(out)
    keep_ops, keep_nodes = set(keep_fp32_ops), set(keep_fp32_nodes)

    # 1. Which precision each float tensor is produced in.
    produced_half: dict[str, bool] = {}
    graph_inputs = {i.name for i in graph.input}
    init_names = {t.name for t in graph.initializer}
    for name in graph_inputs - init_names:
        produced_half[name] = name in floats and not keep_io_types
    half_nodes: list[bool] = []
    for node in graph.node:
        half = not _keeps_fp32(node, keep_ops, keep_nodes, opset)
        half_nodes.append(half)
        if half:
            report.fp16_nodes += 1
        else:
            report.fp32_nodes.append(node.name or node.op_type)
        for o in node.output:
            if o in floats:
                produced_half[o] = half

    # 2. Initializers: converted in place when every consumer computes in float16, else duplicated.
    consumers: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for ni, node in enumerate(graph.node):
        for pos, i in enumerate(node.input):
            consumers[i].append((ni, pos))

    def wants_half(ni: int, pos: int) -> bool:
        node = graph.node[ni]
        return half_nodes[ni] and pos not in FLOAT32_INPUTS.get(node.op_type, frozenset())

    half_copies: dict[str, str] = {}
    for init in list(graph.initializer):
        if init.data_type != FLOAT or init.name in graph_inputs:
            continue
        uses = [wants_half(ni, pos) for ni, pos in consumers.get(init.name, [])]
        if uses and all(uses):
            init.CopyFrom(numpy_helper.from_array(_to_half(numpy_helper.to_array(init), init.name, report), init.name))
            produced_half[init.name] = True
        elif any(uses):
            copy = numpy_helper.from_array(
                _to_half(numpy_helper.to_array(init), init.name, report), init.name + "_fp16"
            )
            graph.initializer.append(copy)
            half_copies[init.name] = copy.name
            produced_half[init.name] = False
        else:
            produced_half[init.name] = False
    for ni, node in enumerate(graph.node):
        if not half_nodes[ni]:
            continue
        if node.op_type in ("Constant", "ConstantOfShape") and node.output[0] in floats:
            _convert_constant(node, report)
        elif node.op_type == "Cast":  # a Cast to float32 inside the float16 region casts to float16 instead
            for a in node.attribute:
                if a.name == "to" and a.i == FLOAT:
                    a.i = HALF

    # 3. Casts where a float tensor crosses precisions (one Cast per tensor and direction).
    new_nodes: list[onnx.NodeProto] = []
    cast_cache: dict[tuple[str, bool], str] = {}

    def cast(name: str, to_half: bool) -> str:
        key = (name, to_half)
        if key not in cast_cache:
            target = f"{name}_{'fp16' if to_half else 'fp32'}"
            new_nodes.append(
                helper.make_node("Cast", [name], [target], name=f"Cast_{target}", to=HALF if to_half else FLOAT)
            )
            report.casts += 1
            cast_cache[key] = target
        return cast_cache[key]

    for ni, node in enumerate(graph.node):
        for pos, name in enumerate(node.input):
            if not name or name not in produced_half:
                continue
            want = wants_half(ni, pos)
            if name in half_copies and want:
                node.input[pos] = half_copies[name]
            elif produced_half[name] != want:
                node.input[pos] = cast(name, want)
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    for out_vi in graph.output:  # graph outputs in the declared precision: rename the producer's, Cast back
        name = out_vi.name
        if name not in produced_half or produced_half[name] == (not keep_io_types):
            continue
        inner = f"{name}_{'fp16' if produced_half[name] else 'fp32'}_out"
        for node in graph.node:
            node.input[:] = [inner if i == name else i for i in node.input]
            node.output[:] = [inner if o == name else o for o in node.output]
        graph.node.append(
            helper.make_node("Cast", [inner], [name], name=f"Cast_{name}_out", to=FLOAT if keep_io_types else HALF)
        )
        report.casts += 1

    # 4. Declared types: graph inputs/outputs when not kept, and drop stale value_info.
    if not keep_io_types:
        for vi in (*graph.input, *graph.output):
            if vi.type.tensor_type.elem_type == FLOAT:
                vi.type.tensor_type.elem_type = HALF
    del graph.value_info[:]
    return out, report

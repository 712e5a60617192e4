"""Rewrite matched ECA blocks into single ECA nodes backed by a model-local function."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import onnx

from eca_deploy.fusion.eca_pattern import EcaMatch, NearMiss, match_eca
from eca_deploy.fusion.graph import GraphIndex, remove_dead_nodes
from eca_deploy.ops import ECA_DOMAIN, ECA_OP_TYPE
from eca_deploy.ops.contract import EcaAttributes, is_eca_node
from eca_deploy.ops.onnx_function import add_eca_functions, make_eca_node, node_attributes


@dataclass
class FusedBlock:
    node: str
    input: str
    k: int
    channels: int | str | None
    variant: str = ""  # the op variant (EcaVariant.overload): "" for the original ECA layer
    residual: str | None = None  # the residual tensor the node adds, when it absorbed the block's Add
    activation: str = "none"


@dataclass
class FusionReport:
    fused: list[FusedBlock] = field(default_factory=list)
    near_misses: list[NearMiss] = field(default_factory=list)
    already_fused: int = 0
    removed_nodes: int = 0
    nodes_before: int = 0
    nodes_after: int = 0

    @property
    def count(self) -> int:
        return len(self.fused)

    @property
    def with_residual(self) -> int:
        return sum(1 for b in self.fused if b.residual is not None)

    def as_dict(self) -> dict[str, object]:
        return {
            "fused": self.count,
            "with_residual": self.with_residual,
            "already_fused": self.already_fused,
            "removed_nodes": self.removed_nodes,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "blocks": [asdict(b) for b in self.fused],
            "near_misses": [asdict(n) for n in self.near_misses],
        }


def count_eca_nodes(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if is_eca_node(n))


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def fuse_eca(model: onnx.ModelProto, residual: bool = True) -> FusionReport:
    """Fuse every ECA block of `model` in place; report fused blocks and refused near-misses.

    With `residual`, a block's following Add of a same-shaped tensor and a following Relu move into its ECA node
    (`act(x * g + residual)`), when nothing else reads the tensors in between.
    """
    report = FusionReport(already_fused=count_eca_nodes(model), nodes_before=len(model.graph.node))
    index = GraphIndex(model)
    claimed: set[int] = set()
    matches: list[EcaMatch] = []
    for node in model.graph.node:
        result = match_eca(index, node)
        if isinstance(result, NearMiss):
            report.near_misses.append(result)
        elif result is not None and not claimed & {id(n) for n in result.nodes}:
            claimed |= {id(n) for n in result.nodes}
            matches.append(result)
    if not matches:
        report.nodes_after = report.nodes_before
        return report
    graph = model.graph
    for i, m in enumerate(matches):
        name = f"{m.mul.name}_ECA" if m.mul.name else f"ECA_{i}"
        eca = make_eca_node(m.x, m.mul.output[0], m.attributes, name)
        position = list(graph.node).index(m.mul)
        graph.node.insert(position, eca)
        for node in m.nodes:
            graph.node.remove(node)
        block = FusedBlock(name, m.x, m.attributes.k, m.channels, m.attributes.variant.overload)
        if residual:
            _absorb_residual(model, index, eca, block)
        report.fused.append(block)
    report.removed_nodes = remove_dead_nodes(model)
    add_eca_functions(model, default_opset(model))
    report.nodes_after = len(model.graph.node)
    return report


def _sole_consumer(model: onnx.ModelProto, tensor: str) -> onnx.NodeProto | None:
    if tensor in {o.name for o in model.graph.output}:
        return None
    users = [n for n in model.graph.node if tensor in n.input]
    return users[0] if len(users) == 1 else None


def _absorb_residual(model: onnx.ModelProto, index: GraphIndex, eca: onnx.NodeProto, block: FusedBlock) -> None:
    """Move a following Add (same-shaped other input) and then a following Relu into the ECA node."""
    attrs = node_attributes(eca)
    x_shape = index.shape(eca.input[0])
    add = _sole_consumer(model, eca.output[0])
    residual = None
    if add is not None and add.op_type == "Add" and len(add.input) == 2:
        other = add.input[1] if add.input[0] == eca.output[0] else add.input[0]
        if other != eca.output[0] and x_shape is not None and None not in x_shape and index.shape(other) == x_shape:
            residual = other
    last = add if residual is not None else eca
    relu = _sole_consumer(model, last.output[0])
    relu = relu if relu is not None and relu.op_type == "Relu" else None
    if residual is None and relu is None:
        return
    tail = relu or add
    merged = EcaAttributes(
        attrs.weights, attrs.bias, attrs.padding, attrs.gate, "relu" if relu else "none", residual is not None
    )
    fused = make_eca_node(eca.input[0], tail.output[0], merged, eca.name, residual=residual)
    nodes = model.graph.node
    position = list(nodes).index(tail)  # the residual and X are both computed before the block's last node
    nodes.insert(position, fused)
    for node in (eca, add if residual is not None else None, relu):
        if node is not None:
            nodes.remove(node)
    block.residual, block.activation, block.variant = residual, merged.activation, merged.variant.overload


def strip_eca_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` without the ECA function definition, for TensorRT's ONNX parser.

    Parsers differ on a node that names both a local function and a registered plugin (older ones
    always inline the function). Without the function, every release looks the op up as a plugin.
    """
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    keep = [f for f in stripped.functions if not (f.domain == ECA_DOMAIN and f.name == ECA_OP_TYPE)]
    del stripped.functions[:]
    stripped.functions.extend(keep)
    return stripped

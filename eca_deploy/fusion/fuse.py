"""Rewrite matched ECA blocks into single ECA nodes backed by a model-local function."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import onnx

from eca_deploy.fusion.eca_pattern import EcaMatch, NearMiss, match_eca
from eca_deploy.fusion.graph import GraphIndex, remove_dead_nodes
from eca_deploy.ops import ECA_DOMAIN, ECA_DOMAIN_VERSION, ECA_OP_TYPE
from eca_deploy.ops.onnx_function import eca_function, make_eca_node


@dataclass(frozen=True)
class FusedBlock:
    node: str
    input: str
    k: int
    channels: int | str | None


@dataclass
class FusionReport:
    fused: list[FusedBlock] = field(default_factory=list)
    near_misses: list[NearMiss] = field(default_factory=list)
    already_fused: int = 0
    removed_nodes: int = 0

    @property
    def count(self) -> int:
        return len(self.fused)

    def as_dict(self) -> dict[str, object]:
        return {
            "fused": self.count,
            "already_fused": self.already_fused,
            "removed_nodes": self.removed_nodes,
            "blocks": [asdict(b) for b in self.fused],
            "near_misses": [asdict(n) for n in self.near_misses],
        }


def count_eca_nodes(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.op_type == ECA_OP_TYPE and n.domain == ECA_DOMAIN)


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def fuse_eca(model: onnx.ModelProto) -> FusionReport:
    """Fuse every ECA block of `model` in place; report fused blocks and refused near-misses."""
    report = FusionReport(already_fused=count_eca_nodes(model))
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
        return report
    graph = model.graph
    for i, m in enumerate(matches):
        name = f"{m.mul.name}_ECA" if m.mul.name else f"ECA_{i}"
        eca = make_eca_node(m.x, m.mul.output[0], m.weights.tolist(), name)
        position = list(graph.node).index(m.mul)
        graph.node.insert(position, eca)
        for node in m.nodes:
            graph.node.remove(node)
        report.fused.append(FusedBlock(name, m.x, int(m.weights.size), m.channels))
    report.removed_nodes = remove_dead_nodes(model)
    _add_eca_function(model)
    return report


def _add_eca_function(model: onnx.ModelProto) -> None:
    if not any(o.domain == ECA_DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(ECA_DOMAIN, ECA_DOMAIN_VERSION))
    if not any(f.domain == ECA_DOMAIN and f.name == ECA_OP_TYPE for f in model.functions):
        model.functions.append(eca_function(default_opset(model)))


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

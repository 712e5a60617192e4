"""Structural matching of ECA blocks in an ONNX graph (by shape of the computation, never by names).

An ECA block is found from its final Mul backwards:

    Mul(X, G)  where  G <- [layout ops] <- Sigmoid <- [layout ops] <- Conv(1->1 channel, k, no bias)
               <- [layout ops] <- GlobalAveragePool(X) | ReduceMean(X, axes={2,3})

"Layout ops" (Reshape, Squeeze, Unsqueeze, Transpose, Expand, Flatten, Identity) only move singleton
dimensions; a Transpose that would reorder the batch and channel axes is refused. This covers the
official ECA-Net layer (squeeze/transpose/conv/transpose/unsqueeze/expand_as) from both PyTorch
exporters, and timm's EcaModule (mean, view [N,1,C], conv, sigmoid, view [N,C,1,1]).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from eca_deploy.fusion.graph import GraphIndex, attr

LAYOUT_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Transpose", "Expand", "Flatten", "Identity"})
NOT_ECA_GATES = frozenset({"HardSigmoid", "HardSwish", "Tanh", "Relu"})


@dataclass
class EcaMatch:
    mul: onnx.NodeProto
    x: str
    weights: np.ndarray  # [k] float32
    nodes: list[onnx.NodeProto] = field(default_factory=list)  # the block's nodes, Mul first
    channels: int | str | None = None


@dataclass(frozen=True)
class NearMiss:
    node: str  # name of the block's Mul node (or its op and output, if unnamed)
    reason: str


class _Refuse(Exception):
    """Looks like ECA but is not fusable; the message says why."""


def _label(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type}({node.output[0]})"


def match_eca(index: GraphIndex, mul: onnx.NodeProto) -> EcaMatch | NearMiss | None:
    """Match the ECA block that ends in `mul`: a match, a near-miss (with a reason) or None."""
    if mul.op_type != "Mul" or len(mul.input) != 2:
        return None
    near: NearMiss | None = None
    for x, g in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
        try:
            found = _match_from_gate(index, mul, x, g)
        except _Refuse as refusal:
            near = near or NearMiss(_label(mul), str(refusal))
            continue
        if found is not None:
            return found
    return near


def _walk_layout(index: GraphIndex, name: str, nodes: list[onnx.NodeProto]) -> onnx.NodeProto | None:
    """Follow layout ops backwards from tensor `name`; return the first other producer."""
    node = index.producer.get(name)
    while node is not None and node.op_type in LAYOUT_OPS:
        nodes.append(node)
        node = index.producer.get(node.input[0])
    return node


def _match_from_gate(index: GraphIndex, mul: onnx.NodeProto, x: str, g: str) -> EcaMatch | None:
    nodes: list[onnx.NodeProto] = [mul]
    gate = _walk_layout(index, g, nodes)
    if gate is None or gate.op_type not in ({"Sigmoid"} | NOT_ECA_GATES):
        return None
    nodes.append(gate)
    conv = _walk_layout(index, gate.input[0], nodes)
    if conv is None or conv.op_type != "Conv":
        return None
    weight = index.constant(conv.input[1])
    weight_shape = weight.shape if weight is not None else index.shape(conv.input[1])
    if weight_shape is None or len(weight_shape) != 3:
        return None  # not a 1-D convolution: SE-style and other attention blocks are not near-misses
    if gate.op_type != "Sigmoid":
        raise _Refuse(f"gate is {gate.op_type}, not Sigmoid: not an ECA block")
    nodes.append(conv)
    weights = _check_conv(conv, weight, weight_shape)
    pool = _walk_layout(index, conv.input[0], nodes)
    if pool is None or not _is_global_mean(index, pool):
        raise _Refuse("the 1-D conv's input is not a global average pool over H and W")
    nodes.append(pool)
    if pool.input[0] != x:
        raise _Refuse("the pooled tensor is not the tensor that the gate multiplies")
    x_shape = index.shape(x)
    if x_shape is not None and len(x_shape) != 4:
        raise _Refuse(f"the gated tensor has rank {len(x_shape)}, ECA needs [N,C,H,W]")
    _check_layout(index, nodes, conv, g, x_shape)
    _check_private(index, nodes)
    return EcaMatch(mul, x, weights, nodes, x_shape[1] if x_shape else None)


def _check_conv(conv: onnx.NodeProto, weight: np.ndarray | None, shape: tuple) -> np.ndarray:
    if weight is None:
        raise _Refuse("the 1-D conv's weight is not a constant")
    if len(conv.input) > 2 and conv.input[2]:
        raise _Refuse("the 1-D conv has a bias (ECA's conv has none)")
    if tuple(shape[:2]) != (1, 1):
        raise _Refuse(f"the 1-D conv maps {shape[1]} to {shape[0]} channels, ECA maps 1 to 1")
    k = int(shape[2])
    if k % 2 == 0:
        raise _Refuse(f"the 1-D conv has an even kernel ({k}); ECA needs odd k")
    if (
        attr(conv, "group", 1) != 1
        or list(attr(conv, "strides", [1])) != [1]
        or list(attr(conv, "dilations", [1])) != [1]
    ):
        raise _Refuse("the 1-D conv has groups, strides or dilations; ECA's has none")
    auto_pad = attr(conv, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    pads = list(attr(conv, "pads", [0, 0]))
    if not (auto_pad in ("SAME_UPPER", "SAME_LOWER") or (auto_pad == "NOTSET" and pads == [(k - 1) // 2] * 2)):
        raise _Refuse(f"the 1-D conv pads {pads}, ECA pads (k-1)/2 = {(k - 1) // 2} on both sides")
    return np.asarray(weight, dtype=np.float32).reshape(-1)


def _is_global_mean(index: GraphIndex, node: onnx.NodeProto) -> bool:
    if node.op_type == "GlobalAveragePool":
        return True
    if node.op_type != "ReduceMean":
        return False
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = index.constant(node.input[1])
        axes = None if value is None else value.tolist()
    if axes is None:
        return False
    rank = len(index.shape(node.input[0]) or (0, 0, 0, 0))
    return {a % rank for a in axes} == {2, 3}


def _static(dim: object) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _check_layout(index: GraphIndex, nodes: list[onnx.NodeProto], conv: onnx.NodeProto, g: str, x_shape) -> None:
    """The layout ops must carry the per-channel values onto the conv's length axis and back to axis 1."""
    for node in nodes:
        if node.op_type != "Transpose":
            continue
        shape = index.shape(node.input[0])
        if shape is None:
            raise _Refuse(f"cannot prove that {_label(node)} keeps the channel order (unknown shape)")
        perm = list(attr(node, "perm", list(reversed(range(len(shape))))))
        moving = [p for p in perm if _static(shape[p]) != 1]
        if moving != sorted(moving):
            raise _Refuse(f"{_label(node)} reorders non-singleton axes {perm}: not a channel-preserving layout")
    conv_in = index.shape(conv.input[0])
    channels = _static(x_shape[1]) if x_shape else None
    if conv_in is not None and (len(conv_in) != 3 or _static(conv_in[1]) != 1):
        raise _Refuse(f"the 1-D conv's input has shape {list(conv_in)}, expected [N, 1, C]")
    if conv_in is not None and channels is not None and _static(conv_in[2]) not in (None, channels):
        raise _Refuse(f"the 1-D conv runs over {conv_in[2]} values, the gated tensor has {channels} channels")
    gate_shape = index.shape(g)
    if (
        gate_shape is not None
        and x_shape is not None
        and (len(gate_shape) != 4 or any(_static(gate_shape[i]) not in (1, _static(x_shape[i]), None) for i in (2, 3)))
    ):
        raise _Refuse(f"the gate has shape {list(gate_shape)}, expected [N, C, 1, 1] against {list(x_shape)}")


def _check_private(index: GraphIndex, nodes: list[onnx.NodeProto]) -> None:
    """Every tensor inside the block must be consumed by the block alone (else removing it breaks the graph)."""
    inside = {id(n) for n in nodes}
    for node in nodes[1:]:  # nodes[0] is the Mul, whose output stays
        for out in node.output:
            users = index.consumers.get(out, [])
            if out in index.graph_outputs or any(id(u) not in inside for u in users):
                raise _Refuse(f"the block's intermediate tensor {out!r} is also used outside the block")

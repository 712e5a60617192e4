"""Structural matching of ECA blocks in an ONNX graph (by shape of the computation, never by names).

An ECA block is found from its final Mul backwards:

    Mul(X, G)  where  G <- [layout ops] <- Sigmoid | HardSigmoid(1/6, 1/2) <- [layout ops]
               <- Conv(1->1 channel, k, constant bias or none) <- [circular pad] <- [layout ops]
               <- GlobalAveragePool(X) | ReduceMean(X, axes={2,3})

The conv either pads (k-1)/2 zeros itself or takes a circular padding of (k-1)/2 channels (a Pad with
mode "wrap", or the Concat(tail, m, head) of slices that PyTorch's TorchScript exporter writes): the
op contract's `padding`; the gate's op is its `gate`; the conv's bias its `bias` (docs/eca_op.md).

"Layout ops" (Reshape, Squeeze, Unsqueeze, Transpose, Expand, Flatten, Identity) only move singleton
dimensions; a Transpose that would reorder the batch and channel axes is refused, and so is a layout that
ends elsewhere: the conv's input (before padding) must be [N, 1, C] and the gate (before any Expand)
[N, C, 1, 1] against X [N, C, H, W]. This covers the
official ECA-Net layer (squeeze/transpose/conv/transpose/unsqueeze/expand_as) from both PyTorch
exporters, and timm's EcaModule (mean, view [N,1,C], conv, sigmoid, view [N,C,1,1]).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from eca_deploy.fusion.graph import GraphIndex, attr
from eca_deploy.ops.contract import ECA_MAX_K, HARD_SIGMOID_ALPHA, HARD_SIGMOID_BETA, EcaAttributes

LAYOUT_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Transpose", "Expand", "Flatten", "Identity"})
NOT_ECA_GATES = frozenset({"HardSwish", "Tanh", "Relu"})
GATES = {"Sigmoid": "sigmoid", "HardSigmoid": "hard_sigmoid"}


@dataclass
class EcaMatch:
    mul: onnx.NodeProto
    x: str
    attributes: EcaAttributes
    nodes: list[onnx.NodeProto] = field(default_factory=list)  # the block's nodes, Mul first
    channels: int | str | None = None

    @property
    def weights(self) -> np.ndarray:
        return np.asarray(self.attributes.weights, dtype=np.float32)


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
    if gate is None or gate.op_type not in (set(GATES) | NOT_ECA_GATES):
        return None
    nodes.append(gate)
    conv = _walk_layout(index, gate.input[0], nodes)
    if conv is None or conv.op_type != "Conv":
        return None
    weight = index.constant(conv.input[1])
    weight_shape = weight.shape if weight is not None else index.shape(conv.input[1])
    if weight_shape is None or len(weight_shape) != 3:
        return None  # not a 1-D convolution: SE-style and other attention blocks are not near-misses
    gate_kind = _gate_kind(gate)
    nodes.append(conv)
    weights = _check_conv_weight(conv, weight, weight_shape)
    bias = _conv_bias(index, conv)
    k = weights.size
    source, padding = conv.input[0], "zeros"
    pad_node = index.producer.get(source)
    circular = _circular_pad_source(index, pad_node, (k - 1) // 2) if pad_node is not None else None
    if circular is not None:
        padding, source = "circular", circular
        nodes.extend(_circular_pad_nodes(index, pad_node))
        _check_conv_pads(conv, k, expected=0)
    else:
        _check_conv_pads(conv, k, expected=(k - 1) // 2)
    pool = _walk_layout(index, source, nodes)
    if pool is None or not _is_global_mean(index, pool):
        raise _Refuse("the 1-D conv's input is not a global average pool over H and W")
    nodes.append(pool)
    if pool.input[0] != x:
        raise _Refuse("the pooled tensor is not the tensor that the gate multiplies")
    x_shape = index.shape(x)
    if x_shape is not None and len(x_shape) != 4:
        raise _Refuse(f"the gated tensor has rank {len(x_shape)}, ECA needs [N,C,H,W]")
    _check_layout(index, nodes, conv, g, x_shape, padded=circular is not None)
    _check_conv_source(index, source, x_shape, (k - 1) // 2 if circular is not None else 0)
    _check_gate_axes(index, mul, g, x_shape)
    _check_private(index, nodes)
    attributes = EcaAttributes(tuple(weights.tolist()), bias, padding, gate_kind)
    return EcaMatch(mul, x, attributes, nodes, x_shape[1] if x_shape else None)


def _gate_kind(gate: onnx.NodeProto) -> str:
    if gate.op_type not in GATES:
        raise _Refuse(f"gate is {gate.op_type}, not Sigmoid or HardSigmoid: not an ECA block")
    if gate.op_type == "HardSigmoid":
        alpha, beta = float(attr(gate, "alpha", 0.2)), float(attr(gate, "beta", 0.5))
        if abs(alpha - HARD_SIGMOID_ALPHA) > 1e-6 or abs(beta - HARD_SIGMOID_BETA) > 1e-6:
            raise _Refuse(
                f"HardSigmoid gate with alpha={alpha:.6g}, beta={beta:.6g}; the ECA op's hard_sigmoid is "
                "PyTorch's (alpha=1/6, beta=1/2)"
            )
    return GATES[gate.op_type]


def _check_conv_weight(conv: onnx.NodeProto, weight: np.ndarray | None, shape: tuple) -> np.ndarray:
    if weight is None:
        raise _Refuse("the 1-D conv's weight is not a constant")
    if tuple(shape[:2]) != (1, 1):
        raise _Refuse(f"the 1-D conv maps {shape[1]} to {shape[0]} channels, ECA maps 1 to 1")
    k = int(shape[2])
    if k % 2 == 0:
        raise _Refuse(f"the 1-D conv has an even kernel ({k}); ECA needs odd k")
    if k > ECA_MAX_K:
        raise _Refuse(f"the 1-D conv has k={k}; the ECA op takes k <= {ECA_MAX_K}")
    if (
        attr(conv, "group", 1) != 1
        or list(attr(conv, "strides", [1])) != [1]
        or list(attr(conv, "dilations", [1])) != [1]
    ):
        raise _Refuse("the 1-D conv has groups, strides or dilations; ECA's has none")
    return np.asarray(weight, dtype=np.float32).reshape(-1)


def _conv_bias(index: GraphIndex, conv: onnx.NodeProto) -> float:
    if len(conv.input) < 3 or not conv.input[2]:
        return 0.0
    bias = index.constant(conv.input[2])
    if bias is None or bias.size != 1:
        raise _Refuse("the 1-D conv's bias is not a constant of one value")
    return float(np.asarray(bias, dtype=np.float32).reshape(-1)[0])


def _check_conv_pads(conv: onnx.NodeProto, k: int, expected: int) -> None:
    auto_pad = attr(conv, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    pads = list(attr(conv, "pads", [0, 0]))
    same = auto_pad in ("SAME_UPPER", "SAME_LOWER") or (auto_pad == "NOTSET" and pads == [(k - 1) // 2] * 2)
    valid = auto_pad == "VALID" or (auto_pad == "NOTSET" and pads == [0, 0])
    if (expected and not same) or (not expected and not valid and k > 1):
        what = f"{expected} on both sides after the circular padding" if not expected else f"(k-1)/2 = {expected}"
        raise _Refuse(f"the 1-D conv pads {pads if auto_pad == 'NOTSET' else auto_pad}, ECA pads {what}")


def _ints(index: GraphIndex, node: onnx.NodeProto, position: int, attribute: str) -> list[int] | None:
    """An int list given as an input (opset >= 10 style) or as an attribute."""
    if len(node.input) > position and node.input[position]:
        value = index.constant(node.input[position])
        return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]
    value = attr(node, attribute)
    return None if value is None else [int(v) for v in value]


def _circular_pad_source(index: GraphIndex, node: onnx.NodeProto, p: int) -> str | None:
    """The [N,1,C] tensor that `node` pads circularly by p channels on both sides, or None."""
    if node.op_type == "Pad":
        mode = attr(node, "mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        pads = _ints(index, node, 1, "pads")
        if mode != "wrap" or pads is None or len(pads) != 6 or (len(node.input) > 3 and node.input[3]):
            return None
        if pads != [0, 0, p, 0, 0, p]:
            raise _Refuse(f"the circular padding pads {pads}, ECA pads (k-1)/2 = {p} channels on both sides")
        return node.input[0]
    if node.op_type != "Concat" or len(node.input) != 3 or attr(node, "axis") not in (2, -1):
        return None
    tail, head = index.producer.get(node.input[0]), index.producer.get(node.input[2])
    if tail is None or head is None or tail.op_type != "Slice" or head.op_type != "Slice":
        return None
    source = node.input[1]
    if tail.input[0] != source or head.input[0] != source:
        return None
    big = 2**62
    c = _static((index.shape(source) or (None, None, None))[-1])
    tail_ok = _is_slice(index, tail, lambda s, e: (s == -p or (c is not None and s == c - p)) and (e >= big or e == c))
    head_ok = _is_slice(index, head, lambda s, e: s == 0 and e == p)
    if not (tail_ok and head_ok):
        raise _Refuse(f"the conv's input is a concatenation of slices but not a circular padding by (k-1)/2 = {p}")
    return source


def _is_slice(index: GraphIndex, node: onnx.NodeProto, ok) -> bool:
    starts, ends = _ints(index, node, 1, "starts"), _ints(index, node, 2, "ends")
    axes, steps = _ints(index, node, 3, "axes"), _ints(index, node, 4, "steps")
    if starts is None or ends is None or len(starts) != 1 or (axes is not None and axes[0] not in (2, -1)):
        return False
    return (steps is None or steps == [1]) and ok(starts[0], ends[0])


def _circular_pad_nodes(index: GraphIndex, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    if node.op_type == "Pad":
        return [node]
    return [node, index.producer[node.input[0]], index.producer[node.input[2]]]


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


def _check_layout(
    index: GraphIndex, nodes: list[onnx.NodeProto], conv: onnx.NodeProto, g: str, x_shape, padded: bool = False
) -> None:
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
    if not padded and conv_in is not None and channels is not None and _static(conv_in[2]) not in (None, channels):
        raise _Refuse(f"the 1-D conv runs over {conv_in[2]} values, the gated tensor has {channels} channels")
    gate_shape = index.shape(g)
    if (
        gate_shape is not None
        and x_shape is not None
        and (len(gate_shape) != 4 or any(_static(gate_shape[i]) not in (1, _static(x_shape[i]), None) for i in (2, 3)))
    ):
        raise _Refuse(f"the gate has shape {list(gate_shape)}, expected [N, C, 1, 1] against {list(x_shape)}")


def _may_equal(a: object, b: object) -> bool:
    """False for two dimensions that shape inference shows to differ: two sizes, or a 1 against a symbol.

    A size against a symbol may agree (a Reshape to [-1, 12, 1, 1] in a model of symbolic C); a 1 against a
    symbol would only agree when the symbol is 1, which a model does not spell as a symbol.
    """
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return not ((a == 1 and isinstance(b, str)) or (b == 1 and isinstance(a, str)))


def _check_conv_source(index: GraphIndex, source: str, x_shape, wrap: int) -> None:
    """The 1-D conv (before any circular padding) runs over each image's C channels: [N, 1, C] against X.

    A Reshape to [1, 1, N*C] would run it across the images; a circular padding by more than C channels wraps
    more than once, which the op's circular padding (PyTorch's) does not.
    """
    shape = index.shape(source)
    if shape is None or x_shape is None or len(shape) != 3:
        return
    if not (_may_equal(shape[0], x_shape[0]) and _may_equal(shape[2], x_shape[1])):
        raise _Refuse(
            f"the 1-D conv runs over a tensor of shape {list(shape)}, ECA's over the channels of each image: "
            f"[N, 1, C] against {list(x_shape)}"
        )
    channels = _static(x_shape[1])
    if wrap and channels is not None and wrap > channels:
        raise _Refuse(f"the circular padding by {wrap} wraps around the {channels} channels more than once")


def _check_gate_axes(index: GraphIndex, mul: onnx.NodeProto, g: str, x_shape) -> None:
    """The gate, before any Expand, must be [N, C, 1, 1] against X [N, C, H, W]: one value per image and channel.

    Layout ops may carry the C values to another axis ([N,1,1,C] against W = C scales columns, not channels);
    an Expand to X's shape then hides that from the Mul's inputs, so the gate is judged before broadcasting.
    """
    if x_shape is None:
        return
    name = g
    node = index.producer.get(name)
    while node is not None and node.op_type in ("Expand", "Identity"):
        name = node.input[0]
        node = index.producer.get(name)
    core = index.shape(name)
    if core is not None and (
        len(core) != 4
        or not all(_may_equal(core[i], x_shape[i]) for i in (0, 1))
        or any(core[i] is not None and _static(core[i]) != 1 for i in (2, 3))
    ):
        raise _Refuse(
            f"the gate has shape {list(core)} before broadcasting, ECA's is [N, C, 1, 1] against {list(x_shape)}: "
            "it does not scale the channels"
        )
    out = index.shape(mul.output[0])
    if out is not None and (len(out) != 4 or not all(_may_equal(o, d) for o, d in zip(out, x_shape, strict=True))):
        raise _Refuse(f"the Mul's output has shape {list(out)}, not the gated tensor's {list(x_shape)}")


def _check_private(index: GraphIndex, nodes: list[onnx.NodeProto]) -> None:
    """Every tensor inside the block must be consumed by the block alone (else removing it breaks the graph)."""
    inside = {id(n) for n in nodes}
    for node in nodes[1:]:  # nodes[0] is the Mul, whose output stays
        for out in node.output:
            users = index.consumers.get(out, [])
            if out in index.graph_outputs or any(id(u) not in inside for u in users):
                raise _Refuse(f"the block's intermediate tensor {out!r} is also used outside the block")

"""Fuzz-style test of the ECA fusion pass on generated ONNX graphs (deterministic, seeded by case index).

Each case is a small graph of one to three blocks in sequence. A block is an ECA block in one of its many
formulations (pooling, layout ops, circular padding, gate, Expand or broadcasting, bias, k), a block whose
intermediate tensor is shared (never fusable), or a near miss that is not ECA (wrong pooling axes, a conv of
two output channels, a dilated conv, Tanh, Relu or HardSwish gates, another HardSigmoid slope, Mul of another
tensor, a gate on the H or W axis, transposes that reorder non-singleton axes, a conv across the images, a
circular padding wider than C). A second ECA block may read the same input, its output added. After a block
comes a context: nothing, a Relu, a residual Add (then maybe a Relu), a broadcasting Add, a second reader of
its output, or a graph output.

Every case asserts: the pass raises nothing, fuses exactly the ECA blocks (a near miss never), the fused
graph passes onnx.checker, loads in ONNX Runtime and matches the unfused graph on random inputs within
the verification tolerance (relative to the largest output value, as `eca-deploy fuse` verifies).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from eca_deploy.fusion import count_eca_nodes, fuse_eca
from eca_deploy.ops.contract import HARD_SIGMOID_ALPHA, HARD_SIGMOID_BETA
from eca_deploy.pipeline.fuse import FUSION_TOLERANCE

CASES = 150
BIG = 2**63 - 1  # the "to the end" of a Slice, as PyTorch writes it

# Seeds of the generated cases that found defects in the pass (kept as explicit regression cases).
# 174, 207, 466, 523, 569: a gate carried onto the W or H axis (by a Reshape or Transpose, maybe hidden by an
# Expand to X's shape) was fused as if it scaled the channels.
# 593, 609, 794: the pooled values of all images reshaped to [1, 1, N*C] and convolved together were fused.
# 845: a circular padding by more than C channels (Pad mode=wrap) was fused; the op wraps at most once.
REGRESSION_SEEDS = [174, 207, 466, 523, 569, 593, 609, 794, 845]

NEAR_MISSES = ("pool_wrong_axes", "pool_all_axes", "conv_two_outputs", "tanh", "hard_sigmoid_slope",
               "mul_other_tensor", "mul_wider_tensor", "gate_on_width", "gate_on_height", "transpose_batch",
               "other_gate", "conv_dilated", "batch_fold", "circular_wide")  # fmt: skip
SHARED = ("shared_gate", "shared_pool", "shared_conv")
CONTEXTS = ("none", "relu", "residual", "residual_relu", "residual_earlier", "broadcast_add", "read_twice",
            "graph_output")  # fmt: skip


@dataclass
class Case:
    model: onnx.ModelProto
    feeds: dict[str, np.ndarray]
    fused: int  # ECA blocks the pass must fuse
    residual_max: int  # residual Adds it may absorb at most
    residual_exact: bool  # all shapes are static: it absorbs exactly that many
    parts: list[str] = field(default_factory=list)  # what the case is made of, for failure messages


class Builder:
    """Nodes, initializers and unique names for one generated graph."""

    def __init__(self, opset: int, symbolic_channels: bool, extra: np.random.Generator | None = None) -> None:
        self.opset = opset
        self.symbolic_channels = symbolic_channels  # the input's C is a symbol, not a number
        # A second stream for the forms added later, so the first one (and its regression seeds) stays as it was
        self.extra = extra or np.random.default_rng(0)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.outputs: list[str] = []
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, value: np.ndarray, hint: str = "c") -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def ints(self, values: list[int]) -> str:
        return self.const(np.asarray(values, np.int64), "ints")

    def op(self, op_type: str, inputs: list[str], **attrs: object) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.name(op_type), **attrs))
        return out

    def squeeze(self, x: str, axes: list[int]) -> str:
        return self.op("Squeeze", [x, self.ints(axes)])

    def unsqueeze(self, x: str, axes: list[int]) -> str:
        return self.op("Unsqueeze", [x, self.ints(axes)])

    def reshape(self, x: str, shape: list[int]) -> str:
        return self.op("Reshape", [x, self.ints(shape)])

    def reduce_mean(self, x: str, axes: list[int], keepdims: int) -> str:
        attrs = {} if keepdims and self.extra.random() < 0.3 else {"keepdims": keepdims}  # 1 is the default
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.ints(axes)], **attrs)
        return self.op("ReduceMean", [x], axes=axes, **attrs)

    def maybe_identity(self, rng: np.random.Generator, x: str) -> str:
        return self.op("Identity", [x]) if rng.random() < 0.15 else x


def pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


# -- the pieces of an ECA block ------------------------------------------------------------------------------


def pool_to_n1c(b: Builder, rng: np.random.Generator, x: str, c: int) -> tuple[str, str]:
    """Global average pool of x [N,C,H,W] and layout ops to [N,1,C]; returns (pooled tensor, [N,1,C])."""
    kind = pick(rng, ("gap", "mean_keep", "mean_flat"))
    axes = pick(rng, ([2, 3], [-2, -1], [3, 2], [-1, 2]))
    if kind == "gap":
        pooled = b.op("GlobalAveragePool", [x])
    else:
        pooled = b.reduce_mean(x, axes, 1 if kind == "mean_keep" else 0)
    t = b.maybe_identity(rng, pooled)
    if kind == "mean_flat":  # [N, C]
        layout = pick(rng, ("unsqueeze", "reshape", "unsqueeze_transpose"))
        if layout == "unsqueeze":
            return pooled, b.unsqueeze(t, [1])
        if layout == "reshape":
            return pooled, b.reshape(t, [0, 1, -1])
        return pooled, b.op("Transpose", [b.unsqueeze(t, [-1])], perm=[0, 2, 1])
    layouts = ["squeeze_transpose", "squeeze2_unsqueeze", "reshape", "reshape_static", "flatten", "transpose_squeeze"]
    if b.symbolic_channels and c == 1:
        layouts.remove("reshape_static")  # see n1c_to_nc11
    layout = pick(rng, layouts)
    if layout == "squeeze_transpose":
        return pooled, b.op("Transpose", [b.squeeze(t, pick(rng, ([3], [-1])))], perm=[0, 2, 1])
    if layout == "squeeze2_unsqueeze":
        return pooled, b.unsqueeze(b.squeeze(t, [2, 3]), [1])
    if layout == "reshape":
        return pooled, b.reshape(t, [0, 1, -1])
    if layout == "reshape_static":
        return pooled, b.reshape(t, [-1, 1, c])
    if layout == "flatten":
        return pooled, b.unsqueeze(b.op("Flatten", [t], axis=1), [1])
    return pooled, b.squeeze(b.op("Transpose", [t], perm=[0, 2, 3, 1]), [1])  # [N,1,1,C] -> [N,1,C]


def circular_pad(b: Builder, rng: np.random.Generator, m: str, p: int, c: int | None, wrap: bool = False) -> str:
    """[N,1,C] -> [N,1,C+2p], wrapped: a Pad(mode=wrap) from opset 19, or PyTorch's Concat of Slices."""
    if wrap or (b.opset >= 19 and rng.random() < 0.5):
        return b.op("Pad", [m, b.ints([0, 0, p, 0, 0, p])], mode="wrap")
    # The tail from -p to the end, as PyTorch writes it, or from C - p to C (which needs a known C to match)
    start, end = (-p, BIG) if b.symbolic_channels or c is None or rng.random() < 0.7 else (c - p, c)
    tail = b.op("Slice", [m, b.ints([start]), b.ints([end]), b.ints([pick(rng, (2, -1))])])
    head = b.op("Slice", [m, b.ints([0]), b.ints([p]), b.ints([2])])
    return b.op("Concat", [tail, m, head], axis=pick(rng, (2, -1)))


def conv1d(b: Builder, rng: np.random.Generator, x: str, k: int, circular: bool, out_channels: int = 1,
           dilation: int = 1) -> str:  # fmt: skip
    w = b.const((rng.standard_normal((out_channels, 1, k)) * 0.7).astype(np.float32), "w")
    inputs = [x, w]
    if rng.random() < 0.5:
        inputs.append(b.const((rng.standard_normal(out_channels) * 0.5).astype(np.float32), "bias"))
    p = (k - 1) // 2 * dilation
    attrs: dict[str, object] = {"dilations": [dilation]} if dilation > 1 else {}
    if rng.random() < 0.5:
        attrs["kernel_shape"] = [k]
    if circular:
        style = pick(rng, ("pads", "none", "valid"))
        attrs.update({"pads": {"pads": [0, 0]}, "none": {}, "valid": {"auto_pad": "VALID"}}[style])
    else:
        style = pick(rng, ("pads", "same_upper", "same_lower"))
        if dilation > 1:
            style = "pads"  # ONNX Runtime pads no dilated conv by SAME_*
        attrs.update({"pads": {"pads": [p, p]}, "same_upper": {"auto_pad": "SAME_UPPER"},
                      "same_lower": {"auto_pad": "SAME_LOWER"}}[style])  # fmt: skip
    return b.op("Conv", inputs, **attrs)


def gate(b: Builder, rng: np.random.Generator, s: str, kind: str) -> str:
    if kind == "sigmoid":
        return b.op("Sigmoid", [s])
    if kind == "hard_sigmoid":
        if b.extra.random() < 0.3:  # beta's default is PyTorch's 1/2
            return b.op("HardSigmoid", [s], alpha=HARD_SIGMOID_ALPHA)
        return b.op("HardSigmoid", [s], alpha=HARD_SIGMOID_ALPHA, beta=HARD_SIGMOID_BETA)
    if kind in ("tanh", "Relu", "HardSwish"):
        return b.op(kind.capitalize() if kind == "tanh" else kind, [s])
    alpha, beta = pick(rng, ((0.2, 0.5), (1 / 6, 0.4), (0.25, 0.5)))
    return b.op("HardSigmoid", [s], alpha=alpha, beta=beta)


def n1c_to_nc11(b: Builder, rng: np.random.Generator, t: str, c: int) -> str:
    layouts = ["transpose_unsqueeze", "reshape", "reshape_static", "unsqueeze_transpose", "squeeze_unsqueeze"]
    if b.symbolic_channels and c == 1:
        # A gate of one channel against a symbolic C: the pass cannot tell it from a gate on another axis.
        layouts.remove("reshape_static")
    layout = pick(rng, layouts)
    if layout == "transpose_unsqueeze":
        return b.unsqueeze(b.op("Transpose", [t], perm=[0, 2, 1]), [pick(rng, (3, -1))])
    if layout == "reshape":
        return b.reshape(t, [0, -1, 1, 1])
    if layout == "reshape_static":
        return b.reshape(t, [-1, c, 1, 1])
    if layout == "unsqueeze_transpose":
        return b.op("Transpose", [b.unsqueeze(t, [3])], perm=[0, 2, 1, 3])
    return b.unsqueeze(b.squeeze(t, [1]), [2, 3])


def scale(b: Builder, rng: np.random.Generator, x: str, g: str) -> str:
    """Mul(x, g), with g expanded to x's shape first or broadcast, either operand order."""
    if rng.random() < 0.3:
        g = b.op("Expand", [g, b.op("Shape", [x])])
    return b.op("Mul", [x, g] if rng.random() < 0.5 else [g, x])


# -- blocks ----------------------------------------------------------------------------------------------------


@dataclass
class Shape:
    n: int
    c: int
    h: int
    w: int


def eca_block(b: Builder, rng: np.random.Generator, x: str, s: Shape, kind: str = "eca") -> tuple[str, list[str]]:
    """One ECA block (or, with `kind`, a shared-tensor variant or near miss of it) reading x; returns its output."""
    c = s.c
    k = int(pick(rng, (1, 3, 3, 5, 5, 7, 9)))
    length = {"pool_wrong_axes": c * s.h, "pool_all_axes": 1}.get(kind, c)  # of the 1-D conv's input
    circular = k > 1 and (k - 1) // 2 <= length and rng.random() < 0.35  # PyTorch wraps at most once
    gate_kind = pick(rng, ("sigmoid", "hard_sigmoid"))
    gate_kind = {"tanh": "tanh", "hard_sigmoid_slope": "hard_sigmoid_other"}.get(kind, gate_kind)
    if kind == "other_gate":
        gate_kind = pick(b.extra, ("Relu", "HardSwish") if b.opset >= 14 else ("Relu",))
    if kind in ("batch_fold", "conv_dilated") and k == 1:
        k = 3  # a 1-wide kernel reads one value wherever the batch is, and has no dilation
    if kind == "batch_fold":
        circular = circular and (k - 1) // 2 <= c * s.n
    if kind == "conv_dilated":
        circular = False
    if kind == "circular_wide":
        k, circular = 2 * c + 3, True  # wraps around the C channels more than once
    parts = [f"{kind}(k={k}{', circular' if circular else ''}, {gate_kind})"]
    source = x
    if kind == "mul_other_tensor":
        source = b.op("Relu", [x])  # the same shape, but not the pooled tensor
    if kind in ("pool_wrong_axes", "pool_all_axes"):
        axes = [3] if kind == "pool_wrong_axes" else [1, 2, 3]
        pooled = b.reduce_mean(x, axes, 1)  # [N,C,H,1] or [N,1,1,1]
        m = b.reshape(pooled, [0, 1, -1])
    else:
        pooled, m = pool_to_n1c(b, rng, x, c)
    if kind == "shared_pool":
        b.outputs.append(b.op("ReduceSum", [pooled], keepdims=0))
    m = b.maybe_identity(rng, m)
    if kind == "batch_fold":
        m = b.reshape(m, [1, 1, -1])  # [1,1,N*C]: the conv runs across the images
    if circular:
        m = circular_pad(b, rng, m, (k - 1) // 2, None if kind == "batch_fold" else length, kind == "circular_wide")
    out_channels = 2 if kind == "conv_two_outputs" else 1
    mixed = conv1d(b, rng, m, k, circular, out_channels, 2 if kind == "conv_dilated" else 1)  # [N,1,L] or [N,2,C]
    if kind == "shared_conv":
        b.outputs.append(b.op("ReduceMax", [mixed], keepdims=0))
    where = pick(rng, ("before", "after"))
    t = gate(b, rng, mixed, gate_kind) if where == "before" else mixed
    if kind == "pool_wrong_axes":
        t = b.reshape(t, [0, c, s.h, 1])
    elif kind == "pool_all_axes":
        t = b.reshape(t, [0, 1, 1, 1])
    elif kind == "conv_two_outputs":
        t = b.unsqueeze(b.op("Transpose", [t], perm=[0, 2, 1]), [3])  # [N,C,2,1] against H = 2
    elif kind == "gate_on_width":
        t = b.reshape(t, [0, 1, 1, -1])  # [N,1,1,C] against W = C: scales columns, not channels
    elif kind == "gate_on_height":
        t = b.op("Transpose", [n1c_to_nc11(b, rng, t, c)], perm=[0, 2, 1, 3])  # [N,1,C,1] against H = C
    elif kind == "transpose_batch":
        t = b.reshape(b.op("Transpose", [t], perm=[2, 1, 0]), [-1, c, 1, 1])  # [C,1,N] read as [N,C]: mixes images
    elif kind == "batch_fold":
        t = b.reshape(t, [-1, c, 1, 1])
    else:
        t = n1c_to_nc11(b, rng, t, c)
    g = gate(b, rng, t, gate_kind) if where == "after" else t
    if kind == "shared_gate":
        b.outputs.append(b.op("ReduceMean", [g], keepdims=0))
    g = b.maybe_identity(rng, g)
    if kind == "mul_wider_tensor":
        source = b.op("Concat", [x, x], axis=3)
        s.w *= 2
    return scale(b, rng, source, g), parts


def near_misses_for(s: Shape, batch_known: bool) -> list[str]:
    """The near misses that make a valid graph for this input shape and are not ECA in disguise."""
    kinds = ["pool_all_axes", "tanh", "hard_sigmoid_slope", "mul_other_tensor", "mul_wider_tensor"]
    if s.w > 1:
        kinds.append("pool_wrong_axes")
    if s.h == 2:
        kinds.append("conv_two_outputs")
    if s.c > 1 and s.w == s.c:
        kinds.append("gate_on_width")
    if s.c > 1 and s.h == s.c:
        kinds.append("gate_on_height")
    if s.c > 1 and (s.n > 1 or not batch_known):
        kinds.append("transpose_batch")
    return kinds


def later_near_misses_for(s: Shape, batch_known: bool, opset: int, symbolic_channels: bool) -> list[str]:
    """Near misses added after the first regression seeds (drawn from the second stream)."""
    kinds = ["other_gate", "conv_dilated"]
    if s.n > 1 or not batch_known:
        kinds.append("batch_fold")
    if opset >= 19 and not symbolic_channels and s.c <= 3:
        kinds.append("circular_wide")  # Pad(wrap) by more than C: more than PyTorch's circular padding does
    return kinds


def context(b: Builder, rng: np.random.Generator, y: str, x: str, earlier: list[str], s: Shape,
            same_shape: bool) -> tuple[str, str, bool]:  # fmt: skip
    """What follows a block's output y (x: the block's input); returns (tensor, context, absorbable residual)."""
    kind = pick(rng, CONTEXTS)
    if kind in ("residual", "residual_relu", "residual_earlier") and not same_shape:
        kind = "relu"
    if kind == "relu":
        return b.op("Relu", [y]), kind, False
    if kind in ("residual", "residual_relu", "residual_earlier"):
        other = pick(rng, earlier) if kind == "residual_earlier" else x
        out = b.op("Add", [y, other] if rng.random() < 0.5 else [other, y])
        return (b.op("Relu", [out]) if kind == "residual_relu" else out), kind, True
    if kind == "broadcast_add" and s.c > 1 and rng.random() < 0.5:
        return b.op("Add", [y, b.reduce_mean(y, [1], 1)]), kind, False  # [N,1,H,W]
    if kind == "broadcast_add" and (s.n, s.h, s.w) != (1, 1, 1):
        shift = b.const(rng.standard_normal((1, s.c, 1, 1)).astype(np.float32), "shift")
        return b.op("Add", [shift, y] if rng.random() < 0.5 else [y, shift]), kind, False
    if kind == "broadcast_add":  # nothing broadcasts against [1, C, 1, 1]
        return b.op("Relu", [y]), "relu", False
    if kind == "read_twice":
        return b.op("Add", [y, b.op("Neg", [y])] if rng.random() < 0.5 else [y, y]), kind, False
    if kind == "graph_output":
        b.outputs.append(y)
        return b.op("Relu", [y]), kind, False
    return y, kind, False


def build_case(seed: int) -> Case:
    rng = np.random.default_rng([20240601, seed])
    opset = int(pick(rng, (13, 15, 17, 18, 19, 20)))
    c = int(rng.integers(1, 13))
    s = Shape(int(pick(rng, (1, 2, 3))), c, int(pick(rng, (1, 2, 3, c))), int(pick(rng, (1, 2, 5, c))))
    dims = pick(rng, ("static", "batch", "symbolic"))
    b = Builder(opset, symbolic_channels=dims == "symbolic", extra=np.random.default_rng([20240602, seed]))
    batch_known = dims == "static"
    input_dims: list[int | str] = [s.n, s.c, s.h, s.w]
    if dims != "static":
        input_dims[0] = "N"
    if dims == "symbolic":
        input_dims[1:] = ["C", "H", "W"]
    shape = (s.n, s.c, s.h, s.w)
    x = "input"
    earlier = [x]
    fused = absorbed = 0
    parts = [f"opset {opset}, input {input_dims} = {list(shape)}"]
    for _ in range(int(pick(rng, (1, 1, 2, 3)))):
        roll = rng.random()
        if roll < 0.55:
            kind = "eca"
        elif roll < 0.7:
            kind = pick(rng, SHARED)
        else:
            kind = pick(rng, near_misses_for(s, batch_known))
        if kind == "eca" and b.extra.random() < 0.15:
            kind = pick(b.extra, later_near_misses_for(s, batch_known, opset, b.symbolic_channels))
        width = s.w
        y, block_parts = eca_block(b, rng, x, s, kind)
        same_shape = s.w == width
        parallel = same_shape and b.extra.random() < 0.12
        if parallel:  # a second ECA block on the same input, added: one of the two takes the Add as its residual
            y2, more = eca_block(b, b.extra, x, s)
            y = b.op("Add", [y, y2])
            block_parts += ["parallel", *more]
        out, ctx, residual = context(b, rng, y, x, [e for e in earlier if same_shape], s, same_shape)
        parts += [*block_parts, ctx]
        fused += (kind == "eca") + parallel
        absorbed += 1 if parallel else kind == "eca" and residual
        if not same_shape:
            earlier = []
        earlier.append(out)
        x = out
    outputs = [x, *b.outputs]
    graph = helper.make_graph(
        b.nodes,
        f"fuzz_{seed}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_dims)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializer=b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset <= 17 else 9
    inferred_graph = onnx.shape_inference.infer_shapes(model).graph
    inferred = {v.name: v for v in (*inferred_graph.value_info, *inferred_graph.output)}
    for output in model.graph.output:
        output.CopyFrom(inferred[output.name])  # graph outputs need a type with a shape (of any rank)
    feeds = {"input": rng.standard_normal(shape).astype(np.float32)}
    return Case(model, feeds, fused, absorbed, dims == "static", parts)


# -- the checks ------------------------------------------------------------------------------------------------


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def check_case(case: Case) -> None:
    what = "; ".join(case.parts)
    onnx.checker.check_model(case.model, full_check=True)  # the generator's own graphs are valid
    expected = run(case.model, case.feeds)
    fused = onnx.ModelProto()
    fused.CopyFrom(case.model)
    report = fuse_eca(fused)
    assert count_eca_nodes(fused) == report.count == case.fused, (what, report.near_misses)
    assert report.with_residual <= case.residual_max, what
    assert report.with_residual == case.residual_max or not case.residual_exact, what
    if not report.count:
        assert fused.SerializeToString() == case.model.SerializeToString(), what  # left exactly as it was
        return
    onnx.checker.check_model(fused, full_check=True)
    got = run(fused, case.feeds)
    assert len(got) == len(expected), what
    for a, e in zip(got, expected, strict=True):
        assert a.shape == e.shape, what
        scale_ = max(1.0, float(np.abs(e).max(initial=0.0)))
        assert float(np.abs(a.astype(np.float64) - e).max(initial=0.0)) / scale_ <= FUSION_TOLERANCE, what


@pytest.mark.parametrize("seed", range(CASES))
def test_fusion_fuzz(seed: int) -> None:
    check_case(build_case(seed))


@pytest.mark.parametrize("seed", REGRESSION_SEEDS)
def test_fusion_fuzz_regressions(seed: int) -> None:
    check_case(build_case(seed))


def test_generator_covers_every_form() -> None:
    """The cases include every near miss, shared-tensor form and context (else a form silently drops out)."""
    seen = " ".join(p for seed in range(CASES) for p in build_case(seed).parts)
    for name in (*NEAR_MISSES, *SHARED, *CONTEXTS, "parallel", "circular", "hard_sigmoid", "eca("):
        assert name in seen, name


@pytest.mark.parametrize("axis", ["width", "height"])
@pytest.mark.parametrize("expand", [False, True])
@pytest.mark.parametrize("symbolic", [False, True])
def test_gate_on_another_axis_is_not_fused(axis: str, expand: bool, symbolic: bool) -> None:
    """A gate whose C values lie along W or H (x is [N,C,C,C]) is not ECA, even when expanded to X's shape."""
    b = Builder(17, symbolic_channels=symbolic)
    rng = np.random.default_rng(0)
    _, m = pool_to_n1c(b, np.random.default_rng(1), "input", 4)
    g = b.op("Sigmoid", [conv1d(b, rng, m, 3, circular=False)])
    if axis == "width":
        g = b.reshape(g, [0, 1, 1, -1])  # [N,1,1,C]
    else:
        g = b.op("Transpose", [b.reshape(g, [0, -1, 1, 1])], perm=[0, 2, 1, 3])  # [N,1,C,1]
    if expand:
        g = b.op("Expand", [g, b.op("Shape", ["input"])])
    y = b.op("Mul", ["input", g])
    report = fuse_eca(one_block_model(b, ["N", "C", "C", "C"] if symbolic else ["N", 4, 4, 4], y))
    assert report.count == 0
    assert "does not scale the channels" in report.near_misses[0].reason


def one_block_model(b: Builder, dims: list[int | str], y: str) -> onnx.ModelProto:
    graph = helper.make_graph(
        b.nodes, "block", [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, dims)], initializer=b.inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", b.opset)])
    model.ir_version = 8 if b.opset <= 17 else 9
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("circular", [False, True])
@pytest.mark.parametrize("batch", ["N", 2])
def test_conv_across_the_images_is_not_fused(circular: bool, batch: int | str) -> None:
    """Pooled values reshaped to [1, 1, N*C]: the conv mixes neighbouring images' channels, ECA does not."""
    b = Builder(17, symbolic_channels=False)
    rng = np.random.default_rng(0)
    _, m = pool_to_n1c(b, np.random.default_rng(1), "input", 4)
    m = b.reshape(m, [1, 1, -1])
    if circular:
        m = circular_pad(b, rng, m, 1, None)
    g = b.op("Sigmoid", [b.reshape(conv1d(b, rng, m, 3, circular), [-1, 4, 1, 1])])
    report = fuse_eca(one_block_model(b, [batch, 4, 3, 3], b.op("Mul", ["input", g])))
    assert report.count == 0
    assert "the 1-D conv runs over" in report.near_misses[0].reason


def test_circular_padding_wider_than_the_channels_is_not_fused() -> None:
    """Pad(mode=wrap) by 3 of 2 channels wraps twice; the op's circular padding, like PyTorch's, at most once."""
    b = Builder(19, symbolic_channels=False)
    rng = np.random.default_rng(0)
    _, m = pool_to_n1c(b, np.random.default_rng(1), "input", 2)
    mixed = conv1d(b, rng, circular_pad(b, rng, m, 3, 2, wrap=True), 7, circular=True)
    g = b.op("Sigmoid", [n1c_to_nc11(b, rng, mixed, 2)])
    report = fuse_eca(one_block_model(b, ["N", 2, 3, 3], b.op("Mul", ["input", g])))
    assert report.count == 0 and "more than once" in report.near_misses[0].reason

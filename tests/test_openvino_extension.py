"""The OpenVINO ECA extension (plugins/openvino) against the float64 reference, every attribute of the op contract.

Each case is a one-node ONNX graph holding the eca_deploy.ECA node, converted by the extension's ONNX frontend
rule onto its CPU op ("op") or onto OpenVINO's standard ops ("opset"), and compiled by OpenVINO's CPU plugin.
"""

from __future__ import annotations

import inspect
import io
import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from eca_deploy.ops import eca_reference
from tests.conftest_openvino import needs_openvino

pytestmark = needs_openvino

PADDINGS, GATES, ACTIVATIONS = ("zeros", "circular"), ("sigmoid", "hard_sigmoid"), ("none", "relu")


def reference(x, weights, *, bias=0.0, padding="zeros", gate="sigmoid", activation="none", residual=None):
    """The contract's float64 reference: eca_deploy.ops.eca_reference once it takes the variant keywords."""
    if "padding" in inspect.signature(eca_reference).parameters:
        return eca_reference(x, weights, bias=bias, padding=padding, gate=gate, activation=activation,
                             residual=residual)  # fmt: skip
    x64, w = np.asarray(x, np.float64), np.asarray(weights, np.float64)
    n, c = x64.shape[:2]
    half = (w.size - 1) // 2
    m = x64.mean(axis=(2, 3))
    s = np.full((n, c), float(bias))
    for j in range(w.size):
        idx = np.arange(c) + j - half
        if padding == "circular":
            s += w[j] * m[:, idx % c]
        else:
            inside = (idx >= 0) & (idx < c)
            s[:, inside] += w[j] * m[:, idx[inside]]
    g = 1.0 / (1.0 + np.exp(-s)) if gate == "sigmoid" else np.clip(s / 6.0 + 0.5, 0.0, 1.0)
    y = x64 * g[:, :, None, None]
    if residual is not None:
        y = y + np.asarray(residual, np.float64)
    return np.maximum(y, 0.0) if activation == "relu" else y


def eca_model(shape, weights, elem=TensorProto.FLOAT, residual=False, dynamic_batch=False, dynamic_hw=False,
              **attrs) -> bytes:  # fmt: skip
    dims = ["N" if dynamic_batch else shape[0], shape[1], *(("H", "W") if dynamic_hw else shape[2:])]
    inputs = [helper.make_tensor_value_info("X", elem, dims)]
    if residual:
        inputs.append(helper.make_tensor_value_info("R", elem, dims))
    node = helper.make_node("ECA", [i.name for i in inputs], ["Y"], domain="eca_deploy",
                            weights=[float(w) for w in weights], plugin_version="1", plugin_namespace="eca_deploy",
                            **attrs)  # fmt: skip
    graph = helper.make_graph([node], "eca", inputs, [helper.make_tensor_value_info("Y", elem, dims)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("eca_deploy", 1)])
    return model.SerializeToString()


def compile_eca(extension: Path, model: bytes, precision: str | None = "f32", lowering: str = "op"):
    import openvino as ov

    from eca_deploy.backends.openvino_runner import LOWERING_ENV, scoped_env

    core = ov.Core()
    core.add_extension(str(extension))
    with scoped_env(LOWERING_ENV, lowering):
        ov_model = core.read_model(io.BytesIO(model))
    ops = {op.get_type_name() for op in ov_model.get_ops()}
    assert ("ECA" in ops) == (lowering == "op"), ops
    config = {"INFERENCE_PRECISION_HINT": precision} if precision else {}
    return core.compile_model(ov_model, "CPU", config)


def run_case(extension, shape, weights, rng, *, precision="f32", elem=np.float32, lowering="op", **attrs):
    residual = attrs.pop("residual", False)
    x = rng.standard_normal(shape).astype(elem) * 2 + 0.3
    r = rng.standard_normal(shape).astype(elem) if residual else None
    model = eca_model(shape, weights, TensorProto.FLOAT16 if elem == np.float16 else TensorProto.FLOAT, residual,
                      **{k: v for k, v in attrs.items() if v is not None})  # fmt: skip
    compiled = compile_eca(extension, model, precision, lowering)
    feed = [x] if r is None else [x, r]
    y = compiled(feed)[0]
    kwargs = {k: v for k, v in attrs.items() if v is not None}
    return y, reference(x, weights, residual=r, **kwargs)


# The CUDA kernels' shape grid: C=1, k > C, H=W=1, odd sizes, several channel tiles, large H*W.
GRID = [
    ((1, 1, 1, 1), 1), ((1, 1, 5, 5), 3), ((2, 3, 1, 1), 5), ((1, 2, 3, 3), 7), ((1, 7, 3, 5), 3),
    ((3, 33, 9, 11), 7), ((2, 64, 7, 7), 5), ((1, 256, 28, 28), 9), ((1, 24, 112, 112), 3), ((1, 5, 1, 1), 63),
]  # fmt: skip
COMBOS = list(itertools.product(PADDINGS, GATES, ACTIVATIONS, (False, True)))


@pytest.mark.parametrize("lowering", ["op", "opset"])
@pytest.mark.parametrize(("shape", "k"), GRID, ids=[f"{'x'.join(map(str, s))}-k{k}" for s, k in GRID])
def test_shape_grid_default_attributes(openvino_extension: Path, shape, k, lowering) -> None:
    rng = np.random.default_rng(k * 1000 + shape[1])
    weights = rng.uniform(-1, 1, k)
    y, ref = run_case(openvino_extension, shape, weights, rng, lowering=lowering)
    assert y.dtype == np.float32 and y.shape == shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lowering", ["op", "opset"])
@pytest.mark.parametrize(("padding", "gate", "activation", "residual"), COMBOS)
def test_every_attribute_combination(openvino_extension: Path, padding, gate, activation, residual, lowering) -> None:
    rng = np.random.default_rng(7)
    # up to 512 channels the opset lowering's channel convolution is a banded 1x1 convolution, above it a row
    # convolution: both forms, k = 1 and k > C included
    cases = (((2, 3, 1, 1), 5), ((1, 9, 4, 3), 3), ((1, 130, 20, 20), 7), ((1, 1, 2, 2), 3), ((1, 2, 3, 3), 9),
             ((1, 6, 5, 5), 1), ((2, 600, 2, 3), 5), ((1, 513, 2, 2), 1))  # fmt: skip
    for shape, k in cases:
        weights = rng.uniform(-2, 2, k)
        y, ref = run_case(openvino_extension, shape, weights, rng, bias=float(rng.uniform(-1, 1)), padding=padding,
                          gate=gate, activation=activation, residual=residual, lowering=lowering)  # fmt: skip
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5, err_msg=f"{shape} k={k}")
        if activation == "relu":
            assert (y >= 0).all()


def test_defaults_equal_explicit_attributes(openvino_extension: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 12, 5, 5)).astype(np.float32)
    w = [0.3, -0.8, 0.5]
    implicit = compile_eca(openvino_extension, eca_model(x.shape, w))([x])[0]
    explicit = compile_eca(openvino_extension, eca_model(x.shape, w, bias=0.0, padding="zeros", gate="sigmoid",
                                                         activation="none"))([x])[0]  # fmt: skip
    np.testing.assert_array_equal(implicit, explicit)
    # and the attributes are read: a circular model differs at the channel ends
    circular = compile_eca(openvino_extension, eca_model(x.shape, w, padding="circular"))([x])[0]
    assert not np.allclose(circular[:, 0], implicit[:, 0]) and np.allclose(circular[:, 5], implicit[:, 5])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 3), c=st.integers(1, 80), h=st.integers(1, 13), w=st.integers(1, 13),
    half=st.integers(0, 8), padding=st.sampled_from(PADDINGS), gate=st.sampled_from(GATES),
    activation=st.sampled_from(ACTIVATIONS), residual=st.booleans(), bias=st.floats(-3, 3),
    seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1e-3, 1.0, 30.0]), lowering=st.sampled_from(["op", "opset"]),
)  # fmt: skip
def test_hypothesis_inputs(openvino_extension: Path, n, c, h, w, half, padding, gate, activation, residual, bias,
                           seed, scale, lowering) -> None:  # fmt: skip
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c, h, w)) * scale).astype(np.float32)
    r = rng.standard_normal(x.shape).astype(np.float32) if residual else None
    weights = rng.uniform(-1.5, 1.5, 2 * half + 1)
    model = eca_model(x.shape, weights, residual=residual, bias=bias, padding=padding, gate=gate, activation=activation)
    y = compile_eca(openvino_extension, model, lowering=lowering)([x] if r is None else [x, r])[0]
    ref = reference(x, weights, bias=bias, padding=padding, gate=gate, activation=activation, residual=r)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * max(1.0, scale))


def test_float16_io(openvino_extension: Path) -> None:
    """Float16 in and out: float32 inside, rounded once (contract numerics)."""
    rng = np.random.default_rng(11)
    for shape, k in (((2, 40, 9, 9), 5), ((1, 3, 1, 1), 7)):
        weights = rng.uniform(-1, 1, k)
        y, ref = run_case(openvino_extension, shape, weights, rng, elem=np.float16, residual=True, activation="relu")
        assert y.dtype == np.float16
        np.testing.assert_allclose(y.astype(np.float64), ref, rtol=2e-3, atol=2e-3)


def test_precision_openvino_picks(openvino_extension: Path) -> None:
    """With no precision hint OpenVINO picks its own (bf16 on CPUs with AVX512_BF16 or AMX); ECA still agrees."""
    rng = np.random.default_rng(5)
    shape, weights = (2, 96, 14, 14), rng.uniform(-1, 1, 5)
    compiled = compile_eca(openvino_extension, eca_model(shape, weights), precision=None)
    picked = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    assert picked in ("f32", "bf16", "f16")
    x = rng.standard_normal(shape).astype(np.float32)
    y = compiled([x])[0]
    tol = 1e-5 if picked == "f32" else 2e-2
    np.testing.assert_allclose(y, reference(x, weights), rtol=tol, atol=tol)


@pytest.mark.parametrize("lowering", ["op", "opset"])
def test_dynamic_batch_and_spatial_sizes(openvino_extension: Path, lowering: str) -> None:
    """Dynamic N, H, W (the opset conversion then takes ReduceMean instead of a global AvgPool)."""
    rng = np.random.default_rng(2)
    weights = [0.1, 0.4, -0.2]
    model = eca_model((1, 10, 6, 6), weights, dynamic_batch=True, dynamic_hw=True, padding="circular")
    compiled = compile_eca(openvino_extension, model, lowering=lowering)
    for shape in ((1, 10, 6, 6), (4, 10, 3, 9), (2, 10, 1, 1)):
        x = rng.standard_normal(shape).astype(np.float32)
        ref = reference(x, weights, padding="circular")
        np.testing.assert_allclose(compiled([x])[0], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("weights", "attrs", "needle"),
    [
        ([0.1, 0.2], {}, "odd number of taps"),
        ([0.1] * 65, {}, "odd number of taps"),
        ([0.5], {"padding": "reflect"}, "'padding' must be"),
        ([0.5], {"gate": "tanh"}, "'gate' must be"),
        ([0.5], {"activation": "gelu"}, "'activation' must be"),
    ],
)
@pytest.mark.parametrize("lowering", ["op", "opset"])
def test_bad_attributes_are_named(openvino_extension: Path, weights, attrs, needle, lowering) -> None:
    with pytest.raises(RuntimeError, match=needle):
        compile_eca(openvino_extension, eca_model((1, 4, 2, 2), weights, **attrs), lowering=lowering)


def test_bad_lowering_is_named(openvino_extension: Path) -> None:
    with pytest.raises(RuntimeError, match="ECA_DEPLOY_OPENVINO_LOWERING must be"):
        compile_eca(openvino_extension, eca_model((1, 4, 2, 2), [0.5]), lowering="fast")


def test_without_extension_openvino_cannot_read_the_fused_node(tmp_path: Path) -> None:
    import openvino as ov

    path = tmp_path / "eca.onnx"
    path.write_bytes(eca_model((1, 4, 2, 2), [0.5]))
    with pytest.raises(Exception, match=r"eca_deploy\.ECA"):
        ov.Core().read_model(str(path))
    assert onnx.load(str(path)).graph.node[0].domain == "eca_deploy"


def test_default_conversion_is_the_opset_lowering(openvino_extension: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loaded by any program without the variable, the extension gives OpenVINO's own ops (the faster in networks)."""
    import openvino as ov

    from eca_deploy.backends.openvino_runner import LOWERING_ENV

    monkeypatch.delenv(LOWERING_ENV, raising=False)
    core = ov.Core()
    core.add_extension(str(openvino_extension))
    model = core.read_model(io.BytesIO(eca_model((1, 8, 4, 4), [0.2, 0.5, -0.1], residual=True, activation="relu")))
    types = {op.get_type_name() for op in model.get_ops()}
    assert "ECA" not in types and {"Multiply", "Add", "Relu"} <= types
    monkeypatch.setenv(LOWERING_ENV, "op")
    assert "ECA" in {op.get_type_name() for op in core.read_model(io.BytesIO(eca_model((1, 8, 4, 4), [1.0]))).get_ops()}


@pytest.mark.parametrize(("taps", "gate_node", "nodes"), [(1, "Reduce", 2), (3, "Convolution", 3)], ids=["k1", "k3"])
def test_opset_lowering_gates_each_channel_once(openvino_extension: Path, taps: int, gate_node: str, nodes: int):
    """The CPU plugin fuses the gate into the node that computes the [N,C,1,1] logits (the pool for one tap, the
    channel convolution for more), not into the pass that writes Y, where it would run once per element of X; and
    one tap costs two nodes: the pool with its gate, and that pass."""
    compiled = compile_eca(openvino_extension, eca_model((1, 16, 28, 28), [0.7, -0.2, 0.4][:taps], residual=True),
                           lowering="opset")  # fmt: skip
    runtime = compiled.get_runtime_model()

    def info(op, key: str) -> str:
        return op.get_rt_info()[key].astype(str)

    computing = [op for op in runtime.get_ops() if info(op, "layerType") not in ("Input", "Output", "Const", "Reorder")]
    holders = [info(op, "layerType") for op in computing if "Sigmoid" in info(op, "originalLayersNames")]
    assert holders == [gate_node], [(info(op, "layerType"), info(op, "originalLayersNames")) for op in computing]
    assert len(computing) == nodes

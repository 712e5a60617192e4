"""The benchmark scripts' comparison models: the no-ECA twin and ECA's floor in the network compute what they say."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from eca_deploy.ops import ECA_DOMAIN, ECA_OP_TYPE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
bench_openvino = pytest.importorskip("bench_openvino", reason="the benchmark scripts need OpenVINO")


def fused_block(residual: bool, relu: bool):
    """One fused ECA node (X and, with a residual, R) between two Identity nodes, as a fused network has it."""
    shape = [2, 4, 3, 5]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("X", "R")[: 1 + residual]]
    eca = helper.make_node(ECA_OP_TYPE, ["x", "R"][: 1 + residual], ["y"], domain=ECA_DOMAIN, name="eca",
                           weights=[0.3, -0.2, 0.5], activation="relu" if relu else "none")  # fmt: skip
    nodes = [helper.make_node("Identity", ["X"], ["x"]), eca, helper.make_node("Identity", ["y"], ["Y"])]
    graph = helper.make_graph(nodes, "block", inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ECA_DOMAIN, 1)])


@pytest.mark.parametrize(("residual", "relu"), [(False, False), (True, False), (True, True)])
def test_twin_and_floor_compute_what_they_stand_for(residual: bool, relu: bool) -> None:
    rng = np.random.default_rng(3)
    feed = {"X": rng.standard_normal((2, 4, 3, 5), np.float32)}
    if residual:
        feed["R"] = rng.standard_normal((2, 4, 3, 5), np.float32)
    x, r = feed["X"], feed.get("R", 0.0)
    act = (lambda v: np.maximum(v, 0)) if relu else (lambda v: v)
    expected = {False: act(x + r), True: act(x * x.mean(axis=(2, 3), keepdims=True) + r)}
    for floor in (False, True):
        model = bench_openvino.without_eca(fused_block(residual, relu), floor=floor)
        assert not any(n.domain == ECA_DOMAIN for n in model.graph.node)
        pools = [n for n in model.graph.node if n.op_type == "GlobalAveragePool"]
        assert len(pools) == floor  # the floor keeps ECA's pool; the twin has none
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(session.run(None, feed)[0], expected[floor], rtol=1e-5, atol=1e-6)

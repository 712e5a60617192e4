"""The ECA fusion pass: counts, numerical equality, other ECA formulations, near-misses, bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from eca_deploy.data.images import Preprocessing, load_images
from eca_deploy.exporters import ExportOptions, export_onnx
from eca_deploy.fusion import count_eca_nodes, fuse_eca, strip_eca_functions
from eca_deploy.models import create_model
from eca_deploy.ops import ECA_ACTIVATIONS, ECA_DOMAIN, ECA_GATES, ECA_PADDINGS, EcaAttributes, plugin_field_set_hash
from eca_deploy.ops.onnx_function import add_eca_functions, make_eca_node
from eca_deploy.ops.reference import eca_reference
from eca_deploy.pipeline.fuse import compare_fused
from tests.conftest import assert_one_line_error

BLOCKS = {"eca_mobilenetv2": 17, "eca_resnet18": 8, "eca_resnet34": 16, "eca_resnet50": 16, "eca_resnet101": 33,
          "eca_resnet152": 50}  # fmt: skip
# Blocks followed by a residual addition: every ResNet block (then a ReLU), MobileNetV2's stride-1 blocks whose
# input and output channels agree (no ReLU).
# `make test-all` only: ResNet-34 has ResNet-18's basic blocks, 101 and 152 have ResNet-50's bottlenecks.
SLOW_ZOO = ("eca_resnet34", "eca_resnet101", "eca_resnet152")
RESIDUAL_BLOCKS = {"eca_mobilenetv2": 10, **{name: n for name, n in BLOCKS.items() if name.startswith("eca_resnet")}}


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_ZOO else n for n in BLOCKS])
def test_every_zoo_model_fuses_and_agrees_on_photographs(name: str) -> None:
    size = 224 if name == "eca_mobilenetv2" else 64
    unfused = export_onnx(create_model(name), name, ExportOptions(img_size=size))
    fused = copy(unfused)
    report = fuse_eca(fused)
    assert report.count == BLOCKS[name] == count_eca_nodes(fused)
    assert report.with_residual == RESIDUAL_BLOCKS[name]
    assert not report.near_misses
    onnx.checker.check_model(fused, full_check=True)
    remaining = {n.op_type for n in fused.graph.node}
    assert not remaining & {"Sigmoid", "Expand", "Transpose", "Squeeze"}
    # No Add or Relu is left between an ECA node and the next block.
    producer = {o: n for n in fused.graph.node for o in n.output}
    after_eca = {n.op_type for n in fused.graph.node if any(producer.get(i, n).domain == ECA_DOMAIN for i in n.input)}
    assert not after_eca & {"Add", "Relu"}
    activations = {onnx.helper.get_attribute_value(a) for n in fused.graph.node for a in n.attribute
                   if a.name == "activation"}  # fmt: skip
    assert activations == ({b"none"} if name == "eca_mobilenetv2" else {b"relu"})
    photos = load_images(None, Preprocessing.for_size(size)).array
    assert compare_fused(unfused, fused, photos) <= 1e-5


@pytest.mark.parametrize(
    ("exporter", "opset", "batch"),
    [("torchscript", 13, None), ("torchscript", 15, 2), ("torchscript", 20, None), ("dynamo", 18, None),
     pytest.param("dynamo", 20, 2, marks=pytest.mark.slow)],  # make test: dynamo at 18, a fixed batch with torchscript
)  # fmt: skip
def test_both_exporters_and_opsets(exporter: str, opset: int, batch: int | None) -> None:
    model = create_model("eca_resnet18")
    unfused = export_onnx(
        model, "eca_resnet18", ExportOptions(opset=opset, img_size=64, exporter=exporter, batch=batch)
    )
    fused = copy(unfused)
    assert fuse_eca(fused).count == 8
    onnx.checker.check_model(fused, full_check=True)
    x = np.random.default_rng(opset).standard_normal((batch or 3, 3, 64, 64), dtype=np.float32)
    a = session(unfused).run(None, {"input": x})[0]
    b = session(fused).run(None, {"input": x})[0]
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


class TimmStyleEca(nn.Module):
    """timm's EcaModule / CecaModule formulations (circular=True), with switches for variants and near-misses."""

    def __init__(self, channels: int, k: int = 5, bias: bool = False, gate: str = "sigmoid",
                 expand: bool = False, reduce: str = "mean", pool_other: bool = False,
                 circular: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.pad = (k - 1) // 2 if circular else 0
        self.conv = nn.Conv1d(1, 1, k, padding=0 if circular else (k - 1) // 2, bias=bias)
        self.gate, self.expand, self.reduce, self.pool_other = gate, expand, reduce, pool_other
        self.head = nn.Conv2d(channels, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        pooled_from = x + 1.0 if self.pool_other else x
        pool = self.reduce == "mean"
        y = pooled_from.mean((2, 3)) if pool else F.adaptive_avg_pool2d(pooled_from, 1).flatten(1)
        y = y.view(x.shape[0], 1, -1)
        if self.pad:
            y = F.pad(y, (self.pad, self.pad), mode="circular")
        y = self.conv(y)
        gates = {"sigmoid": torch.sigmoid, "hard": F.hardsigmoid, "tanh": torch.tanh}
        y = gates[self.gate](y).view(x.shape[0], -1, 1, 1)
        x = x * (y.expand_as(x) if self.expand else y)
        return self.head(x)


def export_small(module: nn.Module, exporter: str = "torchscript", opset: int = 17) -> onnx.ModelProto:
    torch.manual_seed(0)
    module.eval()
    return export_onnx(module, "test", ExportOptions(opset=opset, img_size=32, exporter=exporter))


@pytest.mark.parametrize(("exporter", "opset"), [("torchscript", 13), ("torchscript", 17), ("dynamo", 18)])
@pytest.mark.parametrize(("reduce", "expand"), [("mean", False), ("mean", True), ("pool", False)])
def test_timm_style_eca_fuses(exporter: str, opset: int, reduce: str, expand: bool) -> None:
    unfused = export_small(TimmStyleEca(24, k=5, reduce=reduce, expand=expand), exporter, opset)
    fused = copy(unfused)
    report = fuse_eca(fused)
    assert report.count == 1, report.near_misses
    assert report.fused[0].k == 5 and report.fused[0].channels == 24
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(session(fused).run(None, {"input": x})[0], session(unfused).run(None, {"input": x})[0],
                               atol=1e-5)  # fmt: skip


@pytest.mark.parametrize(("exporter", "opset"), [("torchscript", 13), ("torchscript", 17), ("dynamo", 18)])
@pytest.mark.parametrize(
    ("circular", "gate", "bias", "k"),
    [(True, "sigmoid", False, 5), (True, "hard", True, 3), (False, "hard", False, 5), (False, "sigmoid", True, 7),
     (True, "sigmoid", True, 1)],
)  # fmt: skip
def test_eca_variants_fuse_and_match_pytorch(exporter: str, opset: int, circular: bool, gate: str, bias: bool,
                                             k: int) -> None:  # fmt: skip
    module = TimmStyleEca(12, k=k, bias=bias, gate=gate, circular=circular)
    unfused = export_small(module, exporter, opset)
    fused = copy(unfused)
    report = fuse_eca(fused)
    assert report.count == 1, report.near_misses
    node = next(n for n in fused.graph.node if n.domain == ECA_DOMAIN)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs.get("padding", b"zeros") == (b"circular" if circular and k > 1 else b"zeros")
    assert attrs.get("gate", b"sigmoid") == (b"hard_sigmoid" if gate == "hard" else b"sigmoid")
    assert abs(attrs.get("bias", 0.0) - (module.conv.bias.item() if bias else 0.0)) < 1e-6
    onnx.checker.check_model(fused, full_check=True)
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session(fused).run(None, {"input": x})[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"gate": "tanh"}, "gate is Tanh"),
        ({"pool_other": True}, "pooled tensor is not the tensor that the gate multiplies"),
    ],
)
def test_near_misses_are_left_alone_with_a_reason(kwargs: dict, reason: str) -> None:
    model = export_small(TimmStyleEca(16, k=3, **kwargs))
    before = [n.op_type for n in model.graph.node]
    report = fuse_eca(model)
    assert report.count == 0
    assert [n.op_type for n in model.graph.node] == before
    assert len(report.near_misses) == 1 and reason in report.near_misses[0].reason


def test_hard_sigmoid_of_another_slope_is_a_near_miss() -> None:
    model = export_small(TimmStyleEca(16, k=3, gate="hard"))
    gate = next(n for n in model.graph.node if n.op_type == "HardSigmoid")
    for a in gate.attribute:
        if a.name == "alpha":
            a.f = 0.2  # ONNX's default slope, not PyTorch's 1/6
    report = fuse_eca(model)
    assert report.count == 0 and "alpha=0.2" in report.near_misses[0].reason


def test_residual_is_not_absorbed_when_shapes_differ_or_tensors_are_shared() -> None:
    class Blocks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.eca = TimmStyleEca(8, k=3)
            self.eca.head = nn.Identity()
            self.eca.stem = nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.eca(x) + x.mean(1, keepdim=True)  # broadcasting add: not a residual of the same shape
            b = torch.relu(self.eca(a) + a)  # a residual block: Add and Relu move into the ECA node
            e = self.eca(b)
            return (e + b) + e.sum()  # e is read twice: its Add stays

    torch.manual_seed(0)
    model = Blocks().eval()
    x = torch.randn(2, 8, 6, 6)
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, opset_version=17, dynamo=False, input_names=["input"])
    onnx_model = onnx.load_from_string(buffer.getvalue())
    fused = copy(onnx_model)
    report = fuse_eca(fused)
    assert report.count == 3 and report.with_residual == 1
    assert [b.activation for b in report.fused] == ["none", "relu", "none"]
    assert sum(1 for n in fused.graph.node if n.op_type == "Add") == 3
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(session(fused).run(None, {"input": x.numpy()})[0], expected, rtol=1e-5, atol=1e-5)


def test_shared_intermediate_is_not_fused() -> None:
    class Leaky(TimmStyleEca):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            gate = torch.sigmoid(self.conv(x.mean((2, 3)).view(x.shape[0], 1, -1))).view(x.shape[0], -1, 1, 1)
            return self.head(x * gate) + gate.mean()

    report = fuse_eca(export_small(Leaky(16)))
    assert report.count == 0 and "also used outside the block" in report.near_misses[0].reason


def test_se_block_is_not_a_near_miss() -> None:
    class SE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.fc1, self.fc2 = nn.Conv2d(3, 16, 3), nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))

    report = fuse_eca(export_small(SE()))
    assert report.count == 0 and not report.near_misses


def test_strip_functions_for_tensorrt() -> None:
    fused = export_onnx(create_model("eca_resnet18"), "eca_resnet18", ExportOptions(img_size=64))
    fuse_eca(fused)
    stripped = strip_eca_functions(fused)
    assert len(fused.functions) == 1 and len(stripped.functions) == 0
    node = next(n for n in stripped.graph.node if n.domain == ECA_DOMAIN)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["plugin_version"] == b"2" and attrs["plugin_namespace"] == b"eca_deploy"
    assert attrs["field_set"] == plugin_field_set_hash().encode(), "the library checks it"
    assert len(attrs["weights"]) == 3


def single_eca_model(weights, shape: tuple[int, ...], opset: int, elem=onnx.TensorProto.FLOAT,
                     residual: bool = False) -> onnx.ModelProto:  # fmt: skip
    """A model of one ECA node (weights: a list or EcaAttributes), inputs x [and r], output y."""
    dims = ["N", *shape[1:]]
    inputs = [onnx.helper.make_tensor_value_info(name, elem, dims) for name in (["x", "r"] if residual else ["x"])]
    g = onnx.helper.make_graph(
        [make_eca_node("x", "y", weights, "eca", residual="r" if residual else None)], "eca", inputs,
        [onnx.helper.make_tensor_value_info("y", elem, dims)],
    )  # fmt: skip
    model = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", opset)])
    model.ir_version = 8
    add_eca_functions(model, opset)
    onnx.checker.check_model(model, full_check=True)
    return model


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3), c=st.integers(1, 33), h=st.integers(1, 8), w=st.integers(1, 8),
    k=st.sampled_from([1, 3, 5, 7, 9, 11]), opset=st.sampled_from([13, 17, 20]), seed=st.integers(0, 2**31 - 1),
)  # fmt: skip
def test_eca_function_matches_reference(n: int, c: int, h: int, w: int, k: int, opset: int, seed: int) -> None:
    # Includes k > C, C = 1 and H = W = 1: the op's edge cases in docs/eca_op.md.
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal(k).astype(np.float32).tolist()
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    y = session(single_eca_model(weights, x.shape, opset)).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, eca_reference(x, weights), rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 2), c=st.integers(1, 24), h=st.integers(1, 6), w=st.integers(1, 6),
    k=st.sampled_from([1, 3, 5, 7, 9]), opset=st.sampled_from([13, 17, 20]), seed=st.integers(0, 2**31 - 1),
    bias=st.floats(-2, 2, width=32), padding=st.sampled_from(ECA_PADDINGS), gate=st.sampled_from(ECA_GATES),
    activation=st.sampled_from(ECA_ACTIVATIONS), residual=st.booleans(),
)  # fmt: skip
def test_eca_function_variants_match_reference(n: int, c: int, h: int, w: int, k: int, opset: int, seed: int,
                                               bias: float, padding: str, gate: str, activation: str,
                                               residual: bool) -> None:  # fmt: skip
    if padding == "circular" and (k - 1) // 2 > c:
        k = 2 * c + 1  # the function's circular padding wraps at most once, like PyTorch's
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal(k).astype(np.float32).tolist()
    attrs = EcaAttributes(tuple(weights), bias, padding, gate, activation, residual)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    r = rng.standard_normal((n, c, h, w)).astype(np.float32)
    feed = {"x": x, "r": r} if residual else {"x": x}
    y = session(single_eca_model(attrs, x.shape, opset, residual=residual)).run(None, feed)[0]
    expected = eca_reference(x, weights, bias=bias, padding=padding, gate=gate, activation=activation,
                             residual=r if residual else None)  # fmt: skip
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_eca_function_float16() -> None:
    rng = np.random.default_rng(0)
    weights = [0.5, -1.0, 0.25]
    x = rng.standard_normal((2, 32, 7, 7)).astype(np.float16)
    y = session(single_eca_model(weights, x.shape, 17, onnx.TensorProto.FLOAT16)).run(None, {"x": x})[0]
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float64), eca_reference(x, weights), rtol=2e-3, atol=2e-3)


# CLI


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuse") / "r18.onnx"
    from eca_deploy.onnx_io import save_onnx

    save_onnx(export_onnx(create_model("eca_resnet18"), "eca_resnet18", ExportOptions(img_size=64)), path)
    return path


def test_fuse_cli(cli, exported: Path, tmp_path: Path) -> None:
    out = tmp_path / "fused.onnx"
    result = cli("fuse", exported, "--output", out, "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["fused"] == 8 and report["max_abs_diff"] <= 1e-5
    assert [b["k"] for b in report["blocks"]] == [3, 3, 5, 5, 7, 7, 7, 7]
    assert count_eca_nodes(onnx.load(str(out))) == 8
    again = cli("fuse", out, "--output", tmp_path / "twice.onnx")
    assert again.code == 0 and "already fused" in again.stdout and not (tmp_path / "twice.onnx").exists()


def test_fuse_cli_default_output_name(cli, exported: Path) -> None:
    assert cli("fuse", exported).code == 0
    assert exported.with_name("r18.fused.onnx").exists()


def test_fuse_cli_prints_near_misses(cli, tmp_path: Path) -> None:
    from eca_deploy.onnx_io import save_onnx

    src = tmp_path / "tanh.onnx"
    save_onnx(export_small(TimmStyleEca(16, gate="tanh")), src)
    result = cli("fuse", src, "-o", tmp_path / "out.onnx")
    assert result.code == 0
    assert "no ECA block found" in result.stdout and "Tanh" in result.stdout
    assert not (tmp_path / "out.onnx").exists()
    assert cli("fuse", src, "-o", tmp_path / "out.onnx", "--write-unchanged").code == 0
    assert (tmp_path / "out.onnx").exists()


def test_export_fuse_eca(cli, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    result = cli("export", "--model", "eca_mobilenetv2", "--img-size", "96", "--fuse-eca", "-o", out, "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["fused_eca_blocks"] == 17
    assert count_eca_nodes(onnx.load(str(out))) == 17


def test_fuse_bad_input(cli, tmp_path: Path, exported: Path) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model")
    assert_one_line_error(cli("fuse", text), "not an ONNX model")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(exported.read_bytes()[:20000])
    assert_one_line_error(cli("fuse", truncated), "ONNX")
    assert_one_line_error(cli("fuse", tmp_path / "missing.onnx"), "does not exist")
    assert not list(tmp_path.glob("*.fused.onnx"))


def test_fused_model_inlines_into_standard_ops() -> None:
    # `build --plugin off` and parsers that expand local functions see only the bodies: every variant inlines.
    import onnx.inliner

    unfused = export_onnx(create_model("eca_mobilenetv2"), "eca_mobilenetv2", ExportOptions(img_size=64))
    fused = copy(unfused)
    assert {b.variant for b in fuse_eca(fused).fused} == {"", "residual"}
    inlined = onnx.inliner.inline_local_functions(fused)
    assert not [n for n in inlined.graph.node if n.domain == ECA_DOMAIN] and not inlined.functions
    x = np.random.default_rng(3).standard_normal((2, 3, 64, 64), dtype=np.float32)
    expected = session(unfused).run(None, {"input": x})[0]
    got = session(inlined).run(None, {"input": x})[0]
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()  # random weights: logits ~1e-11
